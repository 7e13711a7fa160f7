"""Size limits on everything a user sends or a repository holds, checked before it is parsed or
reaches Temporal (whose payloads are capped at 2 MB), so an oversized value gets a message that
names it instead of a run stuck in `queued`."""

from __future__ import annotations

import dataclasses
import json

from worker.contract import RunRequest

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

MAX_STAGE_NAME_CHARS = 64
"""Stage and cluster names, in the pipeline file and in a request's stage list."""
MAX_REQUEST_BYTES = 32 * 1024
"""A RunRequest encoded as Temporal encodes it; every activity input of a run carries a copy."""
MAX_PIPELINE_TASKS_BYTES = 768 * 1024
"""All task files of the stages one run plans, together: they travel in one activity result."""
MAX_PREPARED_BYTES = 1024 * 1024
"""The planned run (task files, merged envs, metric patterns) encoded: half Temporal's cap."""
MAX_YAML_DEPTH = 32
"""Nesting of mappings and lists in a pipeline or task file (task files need a handful)."""
MAX_YAML_ALIAS_NODES = 10_000
"""Values YAML aliases (`*name`) may add to a file when expanded: enough for any real reuse,
far too few for a "billion laughs" bomb, which a 300-byte file can make of billions."""
MAX_REPORT_BYTES = 8 * 1024
"""A stage's `::report` Markdown, encoded; 32 stages of it still fit one PR comment's budget."""
MAX_LOG_LINE_BYTES = 300
"""Each line of a stage's log tail, encoded."""
MAX_STAGE_METRICS = 50
"""Distinct metric names kept per stage log."""
MAX_METRIC_NAME_CHARS = 100
MAX_TEMPORAL_PAYLOAD_BYTES = 2 * 1024 * 1024
"""Temporal's default cap on one payload (workflow input, activity input or result)."""

ENCODED_FACTOR = 3
"""Bounded texts take at most this many bytes per character of their limit, once encoded."""

TOO_LONG = "{what} is {size:,} {unit} long; the limit is {limit:,}"
TOO_MANY = "{what}: {count:,} given; the limit is {limit:,}"
HINT_ENVS = ": set the others under `envs:` in .skyrun.yaml"
HINT_ENV_NAME = ": use a shorter name"
HINT_ENV_VALUE = ": put a large value in a file in the repository or a bucket, and pass its path"
HINT_STAGES = ": name fewer stages (naming none runs them all)"
E_REQUEST_TOO_LARGE = (
    "the request is {size:,} bytes long once encoded; the limit is {limit:,} "
    "(the largest part is {field}, {field_size:,} bytes): send fewer or shorter values"
)


class RequestTooLarge(ValueError):
    """A run request that would not fit: the message names the field and the limit."""


def too_long(what: str, size: int, limit: int, unit: str = "characters") -> str:
    return TOO_LONG.format(what=what, size=size, limit=limit, unit=unit)


def bounded(message: str, limit: int = MAX_ERROR_CHARS, keep_end: int = 0) -> str:
    """`message` cut to `limit` characters, saying how much was left out.

    With `keep_end`, that many of the last characters stay too (an error's conclusion, as in
    "... is not of type 'string'"), and the cut is in the middle. Encoded for Temporal, the
    result also stays under ENCODED_FACTOR times `limit` bytes (an emoji takes 12).
    """
    budget = ENCODED_FACTOR * limit
    if len(message) <= limit and (len(message) * 12 <= budget or encoded_chars(message) <= budget):
        return message
    keep_end = min(keep_end, limit // 2)
    head = cut_encoded(message[: limit - keep_end], budget * (limit - keep_end) // limit)
    tail = (
        cut_encoded(message[-keep_end:][::-1], budget * keep_end // limit)[::-1] if keep_end else ""
    )
    left = len(message) - len(head) - len(tail)
    if not tail:
        return f"{head}… ({left:,} more characters left out)"
    return f"{head} … ({left:,} characters left out) … {tail}"


def payload_bytes(value: object) -> int:
    """Size of `value` (a dataclass or plain data) as Temporal's JSON converter encodes it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    # Temporal's converter: compact separators, ASCII only (so "\ud83d\ude00" is 12 bytes).
    return len(json.dumps(value, separators=(",", ":"), default=str))


def encoded_chars(text: str) -> int:
    """How many bytes `text` takes inside a Temporal JSON payload (without the quotes)."""
    return len(json.dumps(text)) - 2


def cut_encoded(text: str, limit: int) -> str:
    """The longest prefix of `text` whose encoded size is at most `limit` bytes."""
    if len(text) * 12 <= limit or encoded_chars(text) <= limit:
        return text
    low, high = 0, min(len(text), limit)
    while low < high:  # the longest prefix that fits, by bisection
        middle = (low + high + 1) // 2
        if encoded_chars(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _name(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_request(request: RunRequest) -> None:
    """Raise RequestTooLarge naming the field and the limit when `request` would not fit.

    Called by every front door before a run starts: the request is copied into every activity
    input of the run, so one that is too big would leave it stuck at its first activity.
    Values are never echoed (they may be secrets); names are, cut short.
    """
    if len(request.envs) > MAX_ENVS:
        raise RequestTooLarge(
            TOO_MANY.format(what="KEY=VALUE", count=len(request.envs), limit=MAX_ENVS) + HINT_ENVS
        )
    for name, value in request.envs.items():
        if len(name) > MAX_ENV_NAME_CHARS:
            raise RequestTooLarge(
                too_long(f"the name of env {_name(name)}", len(name), MAX_ENV_NAME_CHARS)
                + HINT_ENV_NAME
            )
        if len(value) > MAX_ENV_VALUE_CHARS:
            raise RequestTooLarge(
                too_long(f"the value of env {_name(name)}", len(value), MAX_ENV_VALUE_CHARS)
                + HINT_ENV_VALUE
            )
    if len(request.stages) > MAX_STAGES:
        raise RequestTooLarge(
            TOO_MANY.format(what="stages", count=len(request.stages), limit=MAX_STAGES)
            + HINT_STAGES
        )
    for stage in request.stages:
        if len(stage) > MAX_STAGE_NAME_CHARS:
            raise RequestTooLarge(
                too_long(f"stage name {_name(stage)}", len(stage), MAX_STAGE_NAME_CHARS)
            )
    if len(request.ref) > MAX_REF_CHARS:
        raise RequestTooLarge(too_long("the ref", len(request.ref), MAX_REF_CHARS))
    size = payload_bytes(request)
    if size > MAX_REQUEST_BYTES:
        parts = dataclasses.asdict(request)
        field = max(parts, key=lambda key: payload_bytes(parts[key]))
        raise RequestTooLarge(
            E_REQUEST_TOO_LARGE.format(
                size=size,
                limit=MAX_REQUEST_BYTES,
                field=field,
                field_size=payload_bytes(parts[field]),
            )
        )
