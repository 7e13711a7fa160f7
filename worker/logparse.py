"""Results from task logs: `::metric` lines, metric patterns, `::report` blocks and log tails."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from worker.limits import (
    MAX_LOG_LINE_BYTES,
    MAX_METRIC_NAME_CHARS,
    MAX_REPORT_BYTES,
    MAX_STAGE_METRICS,
    cut_encoded,
    encoded_chars,
)
from worker.pipeline import MetricPattern

METRIC_MARKER = "::metric"
REPORT_START = "::report"
REPORT_END = "::endreport"
REPORT_TRUNCATED = "… (report truncated)"
MAX_METRICS = MAX_STAGE_METRICS
"""Distinct metric names kept per log, so a task printing one per step cannot bloat a run."""
# What results take is measured as Temporal encodes them (JSON, ASCII only): 32 stages of them
# travel in every progress report, and an emoji there takes 12 bytes, a control character 6.
_NOTE_EXTRA = encoded_chars(REPORT_TRUNCATED) - len(REPORT_TRUNCATED)

# CSI (colours, cursor moves), OSC (titles, hyperlinks; ended by BEL or ST) and other
# two-character escapes. Applied per line, so an unterminated sequence cannot eat the log.
_ANSI_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[()][A-Za-z0-9]"
    r"|\x1b[@-Z\\-_=>78]"
)
# SkyPilot / Ray: "(task, pid=1234) ", "(setup pid=99) ", "(worker1, rank=1, pid=5, ip=10.0.0.2) ".
_PREFIX_RE = re.compile(r"\([\w.-]+,?(?: [a-z_]+=[^\s,()]+,?)+\) ?")
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
# Ray folds identical lines from several processes and says so at the end of the line.
_METRIC_RE = re.compile(
    r"\s*::metric\s+([A-Za-z0-9_.:/-]{1,"
    + str(MAX_METRIC_NAME_CHARS)
    + r"})\s*=\s*("
    + _NUMBER
    + r")"
    r"(?:\s+\[repeated \d+x across cluster\])?\s*"
)


def _clean_line(line: str) -> str:
    line = _ANSI_RE.sub("", line).rstrip("\r")
    # A progress bar redraws its line with \r: only what was drawn last is visible.
    return line.rsplit("\r", 1)[-1]


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences and keep only the last \\r-separated redraw of each line."""
    return "\n".join(_clean_line(line) for line in text.split("\n"))


def strip_prefix(line: str) -> str:
    """Remove SkyPilot's `(task, pid=N) `-style prefixes from the start of an ANSI-free line."""
    while match := _PREFIX_RE.match(line):
        line = line[match.end() :]
    return line


def _lines(text: str) -> Iterable[str]:
    for line in text.split("\n"):
        yield strip_prefix(_clean_line(line))


def _number(text: str | None) -> float | None:
    """A plain decimal number; nan, inf and overflowing exponents like 1e999 are not numbers."""
    if text is None or not _NUMBER_RE.fullmatch(text.strip()):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def parse_metrics(text: str, patterns: Sequence[MetricPattern] = ()) -> dict[str, float]:
    """Metrics from `::metric NAME=NUMBER` lines and from patterns; the last value of a name wins.

    Patterns are expected to be valid with one capture group (as `parse_pipeline` checks); a
    pattern match that is not a plain decimal number is ignored.
    """
    compiled = [(p.name, re.compile(p.pattern)) for p in patterns]
    metrics: dict[str, float] = {}

    def put(name: str, value: float | None) -> None:
        if value is not None and (name in metrics or len(metrics) < MAX_METRICS):
            metrics[name] = value

    for line in _lines(text):
        if METRIC_MARKER in line and (match := _METRIC_RE.fullmatch(line)):
            put(match.group(1), _number(match.group(2)))
        for name, regex in compiled:
            if regex.groups >= 1 and (found := regex.search(line)):
                put(name, _number(found.group(1)))
    return metrics


def _truncate(report: str, limit: int) -> str:
    fence = "\n```"
    # Leave room for the note, and for closing a code fence the cut may leave open.
    keep = max(0, limit - len(REPORT_TRUNCATED) - 1 - (len(fence) if "```" in report else 0))
    cut = report[:keep]
    if "\n" in cut and report[keep : keep + 1] != "\n":
        cut = cut[: cut.rindex("\n")]
    cut = cut.rstrip()
    # Close a code fence the cut left open, or the truncation note renders as code.
    if sum(1 for line in cut.split("\n") if line.lstrip().startswith("```")) % 2:
        cut += fence
    return f"{cut}\n{REPORT_TRUNCATED}" if cut else REPORT_TRUNCATED


def parse_report(text: str, limit: int = MAX_REPORT_BYTES) -> str:
    """The Markdown of every `::report` … `::endreport` block, joined by blank lines.

    An unterminated block runs to the end of the log; a report longer than `limit` (encoded
    bytes: characters, for plain ASCII) is cut at a line boundary and ends with a note saying so.
    """
    blocks: list[str] = []
    current: list[str] | None = None
    for line in _lines(text):
        marker = line.strip()
        if marker == REPORT_START:
            if current is None:
                current = []
        elif marker == REPORT_END:
            if current is not None:
                blocks.append("\n".join(current).strip("\n"))
                current = None
        elif current is not None:
            current.append(line)
    if current is not None:
        blocks.append("\n".join(current).strip("\n"))
    report = "\n\n".join(block for block in blocks if block.strip())
    if encoded_chars(report) <= limit:
        return report
    return _truncate(report, len(cut_encoded(report, limit - _NOTE_EXTRA)))


def tail_lines(text: str, count: int = 20, width: int = MAX_LOG_LINE_BYTES) -> list[str]:
    """The last `count` non-blank lines after `strip_ansi`, each cut to `width` encoded bytes
    (characters, for plain ASCII)."""
    tail: list[str] = []
    if count <= 0:
        return tail
    for raw in reversed(text.split("\n")):
        line = _clean_line(raw).rstrip()
        if line.strip():
            tail.append(cut_encoded(line, width))
            if len(tail) == count:
                break
    tail.reverse()
    return tail
