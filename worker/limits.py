"""Size limits on everything a user sends or a repository holds, checked before it is parsed or
reaches Temporal (whose payloads are capped at 2 MB), so an oversized value gets a message that
names it instead of a run stuck in `queued`."""

from __future__ import annotations

MAX_COMMENT_CHARS = 65_536
"""GitHub caps issue and pull-request comment bodies at this many characters."""
MAX_COMMAND_CHARS = 8_192
"""The `/skyrun` line itself (Slack's slash-command text is capped at 4,000)."""
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_CHARS = 4_096
MAX_ENVS = 64
MAX_STAGES = 32
MAX_REF_CHARS = 255
MAX_PIPELINE_FILE_BYTES = 256 * 1024
MAX_TASK_FILE_BYTES = 256 * 1024
MAX_ERROR_CHARS = 4_000
"""Errors from SkyPilot, git or YAML parsers are cut to this before they reach a user or history."""

TOO_LONG = "{what} is {size:,} {unit} long; the limit is {limit:,}"


def too_long(what: str, size: int, limit: int, unit: str = "characters") -> str:
    return TOO_LONG.format(what=what, size=size, limit=limit, unit=unit)


def bounded(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`message` cut to `limit` characters, saying how much was left out."""
    if len(message) <= limit:
        return message
    left = len(message) - limit
    return f"{message[:limit]}… ({left:,} more characters left out)"
