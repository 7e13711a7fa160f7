"""What every request handler can reach, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client

from bot.dispatch import Dispatcher
from worker.logstore import LogStore
from worker.settings import Settings


@dataclass
class BotState:
    settings: Settings
    client: Client
    dispatcher: Dispatcher
    logs: LogStore
