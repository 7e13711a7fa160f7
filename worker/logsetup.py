"""Logging: readable lines on a terminal, JSON lines (with run id, repo, delivery) elsewhere."""

from __future__ import annotations

import logging
import os
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", timestamp=True)
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("SKYRUN_LOG_LEVEL", "INFO"))
    # Temporal's worker logs every activity retry at WARNING with full context: keep them, but
    # quiet the chatty HTTP access logs, which the metrics already count.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
