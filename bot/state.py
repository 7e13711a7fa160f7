"""What every request handler can reach, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client

from worker.logstore import LogStore
from worker.runcontrol import RunControl
from worker.settings import Settings


@dataclass
class BotState:
    settings: Settings
    client: Client
    control: RunControl
    logs: LogStore
