"""How a duration, a number, a metric change and a time are written, on every surface (PR
comment, check run, Slack, run pages, command line), and the one parser of the ISO times runs
carry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from worker.contract import INFRA_RECOVERED, InfraCause, StageProgress

NO_VALUE = "—"


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time as runs record it (naive means UTC); None when empty or malformed."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_between(start: str | None, end: str | None) -> float | None:
    began, ended = parse_time(start), parse_time(end)
    if began is None or ended is None:
        return None
    return (ended - began).total_seconds()


def format_duration(seconds: float | None) -> str:
    """`4.2 s`, `42 s`, `3 min 05 s`, `2 h 07 min`; a dash when unknown."""
    if seconds is None:
        return NO_VALUE
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def format_number(value: float) -> str:
    """Whole numbers without a decimal point, others with four significant digits."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def format_change(value: float, base: float) -> str:
    """The change from `base` to `value`: `+0.02 (+2.4%)`, `-3`, `±0`."""
    delta = value - base
    if delta == 0:
        return "±0"
    text = f"{delta:+.4g}"
    if base:
        text += f" ({delta / abs(base) * 100:+.1f}%)"
    return text


def format_time(value: str | datetime | None) -> str:
    """`2026-12-01 10:00:09 UTC`; empty when unknown."""
    when = parse_time(value) if isinstance(value, str) or value is None else value
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


def format_recoveries(causes: Sequence[InfraCause]) -> str:
    """What a stage came through ("recovered after preemption, 1" and a times sign), or ""."""
    counts = Counter(causes)
    return "; ".join(f"{INFRA_RECOVERED[cause]}, {count}\u00d7" for cause, count in counts.items())


# --- just-in-time provisioning and warm clusters (issue 12) -----------------------------------

WARM_FROM = "reused warm cluster from run {run_id}"
PROVISIONED_AHEAD = "cluster provisioned ahead"


def cluster_note(stage: StageProgress) -> str:
    """How the stage's cluster came to be ready, when it was not launched in the stage's own
    step: a warm cluster of an earlier run of the lane, or provisioned while its needs ran."""
    if stage.cluster_reused_from:
        return WARM_FROM.format(run_id=stage.cluster_reused_from)
    if stage.provision_finished_at and not stage.provision_failed:
        return PROVISIONED_AHEAD
    return ""


# --- stages as a DAG (issue 12) -------------------------------------------------------------

PARALLEL = " ∥ "
THEN = " → "


def is_chain(needs: Mapping[str, Sequence[str]]) -> bool:
    """Whether the stages run one after another, each needing exactly the one before."""
    names = list(needs)
    return all(list(needs[name]) == ([names[i - 1]] if i else []) for i, name in enumerate(names))


def stage_flow(needs: Mapping[str, Sequence[str]], name: Callable[[str], str] = str) -> str:
    """How the stages run: `prep → train-a ∥ train-b → join` (stages in one step run at once,
    each step after the one before it); empty when they simply run one after another."""
    if is_chain(needs):
        return ""
    depth: dict[str, int] = {}

    def level(stage: str, seen: frozenset[str]) -> int:
        if stage not in depth:
            before = [n for n in needs[stage] if n in needs and n not in seen]
            depth[stage] = 1 + max((level(n, seen | {n}) for n in before), default=-1)
        return depth[stage]

    steps: dict[int, list[str]] = {}
    for stage in needs:
        steps.setdefault(level(stage, frozenset({stage})), []).append(name(stage))
    return THEN.join(PARALLEL.join(steps[step]) for step in sorted(steps))
