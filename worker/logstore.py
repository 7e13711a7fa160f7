"""The log store: each stage's full log as a file under the data dir, outliving its cluster."""

from __future__ import annotations

import re
from pathlib import Path

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, run_id: str, stage: str) -> Path:
        """Where a stage's log lives; names are checked so a URL can never escape the store."""
        if not _SAFE.match(run_id) or not _SAFE.match(stage) or ".." in run_id + stage:
            raise ValueError(f"invalid run or stage name: {run_id!r}/{stage!r}")
        return self.root / run_id / f"{stage}.log"

    def exists(self, run_id: str, stage: str) -> bool:
        try:
            return self.path(run_id, stage).is_file()
        except ValueError:
            return False

    def read_text(self, run_id: str, stage: str) -> str:
        return self.path(run_id, stage).read_text(encoding="utf-8", errors="replace")
