"""The URLs skyrun posts: run pages, logs and the Temporal UI (plain; used by bot and reporters)."""

from __future__ import annotations

from urllib.parse import quote

from worker.settings import Settings


class Links:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.public_url
        self.temporal_ui = settings.temporal_ui_url
        self.namespace = settings.temporal_namespace

    def run(self, run_id: str) -> str:
        return f"{self.base}/runs/{quote(run_id)}"

    def log(self, run_id: str, stage: str) -> str:
        return f"{self.base}/runs/{quote(run_id)}/logs/{quote(stage)}"

    def api(self, run_id: str) -> str:
        return f"{self.base}/api/runs/{quote(run_id)}"

    def temporal(self, run_id: str) -> str:
        return f"{self.temporal_ui}/namespaces/{quote(self.namespace)}/workflows/{quote(run_id)}"
