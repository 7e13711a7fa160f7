"""The results table of a sweep: one row per combination (its values, state, duration, metrics
with their change against the baseline, gate results, a link to its run), the best row marked.
Rendered as Markdown for the pull request comment and as Block Kit for Slack. Pure: no I/O.

The best row is ranked by the first gate's metric in the gate's direction (`>=`/`>`: higher is
better, `<=`/`<`: lower), or, without gates, by the first metric (higher is better); only runs
whose stages all succeeded compete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worker.baseline import Baseline
from worker.contract import RunProgress, RunState, Trigger, Verdict
from worker.formatting import (
    NO_VALUE,
    format_change,
    format_duration,
    format_number,
    seconds_between,
)
from worker.gates import GateSyntaxError, failure_summary, parse_gate
from worker.github import texts as github_texts
from worker.links import Links
from worker.masking import Masker
from worker.slack import texts as slack_texts
from worker.slack.blocks import ACTION_CANCEL
from worker.sweepspec import SweepRequest, describe

AXES_JOIN = " \N{MULTIPLICATION SIGN} "
MAX_METRIC_COLUMNS = 6
MAX_VALUE_CHARS = 60
MAX_COMMENT_CHARS = 65536
SLACK_SECTION_LIMIT = 2900

# The pull request comment.
TAG = "<!-- skyrun:sweep {sweep_id} -->"
HEADER_RUNNING = "### 🏃 skyrun sweep `{sweep_id}`: {done} of {count} runs finished"
HEADER_FINISHED = "### {emoji} skyrun sweep `{sweep_id}`: all {count} runs finished"
HEADER_CANCELLED = "### 🚫 skyrun sweep `{sweep_id}` was cancelled"
SUBJECT = "{axes} on {where} · {trigger} · {count} runs"
SUBJECT_COMMIT = "commit `{commit}` of `{ref}`"
SUBJECT_REF = "`{ref}`"
TRIGGER = "asked for by @{user}"
TABLE_HEAD = "| | {keys} | state | duration | {metrics}gates | run |"
BEST_MARK = "🏆"
BEST_BY_GATE = "{mark} best by `{metric}` ({direction}; the first gate, `{gate}`)."
BEST_BY_METRIC = "{mark} best by `{metric}` ({direction}; the first metric, no gates)."
HIGHER = "higher is better"
LOWER = "lower is better"
BASELINE = "Changes are against [`{ref}`]({url}) @ `{commit}`, the last successful run of `{ref}`."
NO_BASELINE = "_No successful run of `{ref}` to compare with yet._"
NEXT_RUNNING = (
    "Comment `/skyrun cancel` to cancel this sweep and its runs (their clusters are torn down)."
)
CANCELLED = "The sweep was cancelled ({reason}); every run it started was cancelled and torn down."
GATES_PASSED = "✅ {passed} of {count}"
GATES_FAILED = "❌ {summary}"
STATE_GATE_FAILED = "❌ gate failed"
NOT_STARTED = "⏭️ not started"
PENDING = "…"
CHANGE = "{value} ({change})"
RUN_LINK = "[`{run_id}`]({url})"
CUT_NOTE = "\n\n… _(cut to fit GitHub's size limit; every run is on its run page)_"

# Slack.
SLACK_TITLE_RUNNING = (
    ":arrows_counterclockwise: *Sweep of {what}* — {done} of {count} runs finished"
)
SLACK_TITLE_FINISHED = "{icon} *Sweep of {what}* — all {count} runs finished"
SLACK_TITLE_CANCELLED = ":no_entry_sign: *Sweep of {what}* — cancelled"
SLACK_CONTEXT = "sweep `{sweep_id}` · {axes} · {count} runs · asked for by {who}"
SLACK_ROW = "{mark}{icon} `{values}` {state} · {duration}{metrics}{gates} · <{url}|run>"
SLACK_METRIC = " · `{name}` *{value}*{change}"
SLACK_CHANGE = " ({change})"
SLACK_GATES_PASSED = " · gates passed"
SLACK_GATES_FAILED = " · gate failed: {summary}"
SLACK_BEST = ":trophy: "
SLACK_NOT_STARTED = "not started"
SLACK_BEST_NOTE = ":trophy: best by `{metric}` ({direction})"
SLACK_BASELINE = "changes against <{url}|{run_id}>, the last successful run of `{ref}`"
SLACK_NO_BASELINE = "no earlier successful run of `{ref}` to compare with"
SLACK_FALLBACK = "skyrun sweep of {what}: {done} of {count} runs finished"
BUTTON_CANCEL = "Cancel sweep"
CONFIRM_TITLE = "Cancel this sweep?"
CONFIRM_TEXT = "Every run of the sweep stops and every cluster it launched is torn down."
CONFIRM_YES = "Cancel sweep"
CONFIRM_NO = "Keep it running"


@dataclass
class SweepRow:
    index: int
    values: dict[str, str]
    run_id: str
    progress: RunProgress | None = None
    """None until the run answers (just started, or its worker is busy)."""

    @property
    def state(self) -> RunState:
        return self.progress.state if self.progress is not None else RunState.QUEUED

    @property
    def metrics(self) -> dict[str, float]:
        return self.progress.metrics if self.progress is not None else {}


@dataclass(frozen=True)
class Ranking:
    metric: str
    higher_better: bool
    gate: str = ""
    """The gate it comes from ("" when it is the first metric)."""

    @property
    def direction(self) -> str:
        return HIGHER if self.higher_better else LOWER


@dataclass
class SweepView:
    sweep_id: str
    request: SweepRequest
    rows: list[SweepRow]
    links: Links
    state: RunState = RunState.RUNNING
    """The sweep's: running, or how it ended (cancelled, or the runs' outcome)."""
    baseline: Baseline | None = None
    base_ref: str = ""
    """The branch the baseline was looked for on ("" while not looked up: nothing is said)."""
    error: str = ""
    """Why the sweep was cancelled."""

    @property
    def done(self) -> int:
        return sum(1 for row in self.rows if row.state.finished)


def ranking(rows: Sequence[SweepRow]) -> Ranking | None:
    """What ranks the rows: the first gate's metric, else the first metric reported."""
    for row in rows:
        if row.progress is not None and row.progress.gates:
            expr = row.progress.gates[0].expr
            try:
                gate = parse_gate(expr)
            except GateSyntaxError:
                break
            return Ranking(gate.metric, gate.op in (">=", ">"), gate=expr)
    for row in rows:
        for name in row.metrics:
            return Ranking(name, True)
    return None


def best(rows: Sequence[SweepRow], rank: Ranking | None) -> int | None:
    """The index of the best row so far (ties: the first), or None when none competes."""
    if rank is None:
        return None
    competing = [
        row for row in rows if row.state is RunState.SUCCEEDED and rank.metric in row.metrics
    ]
    if not competing:
        return None
    sign = 1 if rank.higher_better else -1
    top = max(competing, key=lambda row: (sign * row.metrics[rank.metric], -row.index))
    return top.index


def metric_columns(rows: Sequence[SweepRow], rank: Ranking | None) -> list[str]:
    """The ranking metric first, then the others in the order the runs reported them."""
    names: list[str] = [rank.metric] if rank is not None else []
    for row in rows:
        names += [name for name in row.metrics if name not in names]
    return names[:MAX_METRIC_COLUMNS]


def _code(text: str) -> str:
    """A value inside a code span in a table cell: no backticks, no column breaks, one line."""
    text = text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
    return "`" + text.replace("`", "'").replace("\n", " ").replace("|", "\\|") + "`"


def _duration(progress: RunProgress | None) -> str:
    if progress is None or not progress.state.finished:
        return PENDING
    return format_duration(seconds_between(progress.started_at, progress.finished_at))


def _gate_failed(progress: RunProgress | None) -> bool:
    return (
        progress is not None
        and progress.state is RunState.SUCCEEDED
        and progress.verdict is Verdict.FAILED
    )


def _state(row: SweepRow, sweep: RunState) -> str:
    if row.progress is None and sweep.finished:
        return NOT_STARTED
    if _gate_failed(row.progress):
        return STATE_GATE_FAILED
    state = row.state
    return f"{github_texts.STATE_EMOJI[state]} {github_texts.STATE_WORDS[state]}"


def _metric(row: SweepRow, name: str, baseline: Baseline | None) -> str:
    value = row.metrics.get(name)
    if value is None:
        return NO_VALUE if row.state.finished else PENDING
    base = baseline.metrics.get(name) if baseline is not None else None
    if base is None:
        return format_number(value)
    return CHANGE.format(value=format_number(value), change=format_change(value, base))


def _gates(row: SweepRow) -> str:
    progress = row.progress
    if progress is None or not progress.gates:
        return NO_VALUE if row.state.finished else PENDING
    failed = progress.failed_gates
    if failed:
        return GATES_FAILED.format(summary=failure_summary(failed[0]).replace("|", "\\|"))
    return GATES_PASSED.format(passed=len(progress.gates), count=len(progress.gates))


def _where(view: SweepView) -> str:
    base = view.request.base
    commit = base.commit or next(
        (row.progress.commit for row in view.rows if row.progress and row.progress.commit), ""
    )
    ref = base.ref or base.default_branch or "default branch"
    if len(commit) == 40:
        return SUBJECT_COMMIT.format(commit=commit[:7], ref=ref.replace("`", "'"))
    return SUBJECT_REF.format(ref=ref.replace("`", "'"))


def _axes(view: SweepView, quote: str = "`") -> str:
    return AXES_JOIN.join(f"{quote}{axis.key}{quote}" for axis in view.request.axes)


def _header(view: SweepView) -> str:
    count = len(view.rows)
    if view.state is RunState.CANCELLED:
        return HEADER_CANCELLED.format(sweep_id=view.sweep_id)
    if view.state.finished:
        emoji = "✅" if view.state is RunState.SUCCEEDED else "❌"
        return HEADER_FINISHED.format(emoji=emoji, sweep_id=view.sweep_id, count=count)
    return HEADER_RUNNING.format(sweep_id=view.sweep_id, done=view.done, count=count)


def table(view: SweepView) -> str:
    """The Markdown table, one row per combination, the best one marked."""
    rank = ranking(view.rows)
    top = best(view.rows, rank)
    columns = metric_columns(view.rows, rank)
    keys = [axis.key for axis in view.request.axes]
    head = TABLE_HEAD.format(
        keys=" | ".join(_code(key) for key in keys),
        metrics="".join(f"{_code(name)} | " for name in columns),
    )
    lines = [head, "|" + " --- |" * (len(keys) + len(columns) + 5)]
    for row in view.rows:
        cells = [
            BEST_MARK if row.index == top else "",
            *(_code(row.values.get(key, "")) for key in keys),
            _state(row, view.state),
            _duration(row.progress),
            *(_metric(row, name, view.baseline) for name in columns),
            _gates(row),
            RUN_LINK.format(run_id=row.run_id, url=view.links.run(row.run_id)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best_note(view: SweepView) -> str:
    rank = ranking(view.rows)
    if rank is None or best(view.rows, rank) is None:
        return ""
    template = BEST_BY_GATE if rank.gate else BEST_BY_METRIC
    return template.format(
        mark=BEST_MARK,
        metric=rank.metric,
        direction=rank.direction,
        gate=rank.gate.replace("`", "'"),
    )


def _baseline_note(view: SweepView) -> str:
    if view.baseline is not None:
        return BASELINE.format(
            ref=view.baseline.ref,
            url=view.links.run(view.baseline.run_id),
            commit=view.baseline.commit[:7],
        )
    if view.base_ref and any(row.metrics for row in view.rows):
        return NO_BASELINE.format(ref=view.base_ref)
    return ""


def comment(view: SweepView, masker: Masker | None = None) -> str:
    """The sweep's one pull request comment, tagged so later reports find and edit it."""
    masker = masker or Masker()
    view = masker.mask_data(view)
    base = view.request.base
    subject = SUBJECT.format(
        axes=_axes(view),
        where=_where(view),
        trigger=TRIGGER.format(user=base.requested_by or "someone"),
        count=len(view.rows),
    )
    parts = [
        TAG.format(sweep_id=view.sweep_id) + "\n" + _header(view) + "\n" + subject,
        table(view),
        "\n".join(note for note in (_best_note(view), _baseline_note(view)) if note),
    ]
    if view.state is RunState.CANCELLED:
        parts.append(CANCELLED.format(reason=(view.error or "cancelled").rstrip(".")))
    elif not view.state.finished:
        parts.append(NEXT_RUNNING)
    body = masker.mask("\n\n".join(part for part in parts if part))
    if len(body) <= MAX_COMMENT_CHARS:
        return body
    keep = body[: MAX_COMMENT_CHARS - len(CUT_NOTE)]
    return keep[: keep.rfind("\n")] + CUT_NOTE


def is_comment(body: str, sweep_id: str) -> bool:
    return body.split("\n", 1)[0] == TAG.format(sweep_id=sweep_id)


# Slack.

Block = dict[str, Any]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = SLACK_SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _what(view: SweepView) -> str:
    base = view.request.base
    return _escape(f"{base.repo}@{base.ref}" if base.ref else base.repo)


def _slack_row(view: SweepView, row: SweepRow, top: int | None, columns: list[str]) -> str:
    progress = row.progress
    if _gate_failed(progress):
        icon, state = slack_texts.RUN_ICONS[RunState.FAILED], slack_texts.GATES_FAILED_WORDS
    elif progress is None and view.state.finished:
        icon, state = slack_texts.RUN_ICONS[RunState.SKIPPED], SLACK_NOT_STARTED
    else:
        icon, state = slack_texts.RUN_ICONS[row.state], slack_texts.RUN_WORDS[row.state]
    metrics = ""
    for name in columns:
        value = row.metrics.get(name)
        if value is None:
            continue
        base = view.baseline.metrics.get(name) if view.baseline is not None else None
        change = "" if base is None else SLACK_CHANGE.format(change=format_change(value, base))
        metrics += SLACK_METRIC.format(
            name=_escape(name), value=format_number(value), change=change
        )
    gates = ""
    if progress is not None and progress.gates:
        failed = progress.failed_gates
        gates = (
            SLACK_GATES_FAILED.format(summary=_escape(failure_summary(failed[0])))
            if failed
            else SLACK_GATES_PASSED
        )
    return SLACK_ROW.format(
        mark=SLACK_BEST if row.index == top else "",
        icon=icon,
        values=_escape(describe(row.values)).replace("`", "'"),
        state=state,
        duration=_duration(progress),
        metrics=metrics,
        gates=gates,
        url=view.links.run(row.run_id),
    )


def cancel_button(sweep_id: str) -> Block:
    return {
        "type": "button",
        "action_id": ACTION_CANCEL,
        "text": {"type": "plain_text", "text": BUTTON_CANCEL},
        "style": "danger",
        "value": sweep_id,
        "confirm": {
            "title": {"type": "plain_text", "text": CONFIRM_TITLE},
            "text": {"type": "mrkdwn", "text": CONFIRM_TEXT},
            "confirm": {"type": "plain_text", "text": CONFIRM_YES},
            "deny": {"type": "plain_text", "text": CONFIRM_NO},
        },
    }


def slack_text(view: SweepView) -> str:
    """The message's plain text (notifications, clients without Block Kit)."""
    return SLACK_FALLBACK.format(what=_what(view), done=view.done, count=len(view.rows))


def slack_blocks(view: SweepView, masker: Masker | None = None) -> list[Block]:
    """The sweep's one Slack message: title, who and what, one line per run, the best marked,
    the baseline, and a Cancel button while it runs."""
    masker = masker or Masker()
    view = masker.mask_data(view)
    count = len(view.rows)
    if view.state is RunState.CANCELLED:
        title = SLACK_TITLE_CANCELLED.format(what=_what(view))
    elif view.state.finished:
        icon = slack_texts.RUN_ICONS[
            RunState.SUCCEEDED if view.state is RunState.SUCCEEDED else RunState.FAILED
        ]
        title = SLACK_TITLE_FINISHED.format(icon=icon, what=_what(view), count=count)
    else:
        title = SLACK_TITLE_RUNNING.format(what=_what(view), done=view.done, count=count)
    base = view.request.base
    user = base.requested_by
    mention = base.trigger is Trigger.SLACK and user.isalnum()
    context = SLACK_CONTEXT.format(
        sweep_id=_escape(view.sweep_id),
        axes=_axes(view),
        count=count,
        who=f"<@{user}>" if mention else (_escape(user) or "someone"),
    )
    rank = ranking(view.rows)
    top = best(view.rows, rank)
    columns = metric_columns(view.rows, rank)
    rows = "\n".join(_slack_row(view, row, top, columns) for row in view.rows)
    notes = []
    if rank is not None and top is not None:
        notes.append(SLACK_BEST_NOTE.format(metric=_escape(rank.metric), direction=rank.direction))
    if view.baseline is not None:
        notes.append(
            SLACK_BASELINE.format(
                url=view.links.run(view.baseline.run_id),
                run_id=_escape(view.baseline.run_id),
                ref=_escape(view.baseline.ref),
            )
        )
    elif view.base_ref and any(row.metrics for row in view.rows):
        notes.append(SLACK_NO_BASELINE.format(ref=_escape(view.base_ref)))
    blocks: list[Block] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(title)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(context)}]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(rows)}},
    ]
    if notes:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(" · ".join(notes))}]}
        )
    if view.state is RunState.CANCELLED and view.error:
        text = slack_texts.ERROR.format(error=_escape(view.error))
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text)}})
    if not view.state.finished:
        blocks.append({"type": "actions", "elements": [cancel_button(view.sweep_id)]})
    return masker.mask_data(blocks)
