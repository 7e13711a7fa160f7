"""Block Kit for a run: its progress message and thread replies (pure: no I/O)."""

from __future__ import annotations

import re
from typing import Any

from worker.baseline import Baseline
from worker.capacity import queued_line
from worker.contract import (
    GateResult,
    RunProgress,
    RunState,
    StageProgress,
    StageState,
    Trigger,
    Verdict,
)
from worker.costview import cost_text, estimate_text, over_budget_text
from worker.formatting import (
    NO_VALUE,
    cluster_note,
    format_change,
    format_duration,
    format_number,
    format_recoveries,
    parse_time,
    seconds_between,
    stage_flow,
)
from worker.gates import failure_summary
from worker.links import REPO_RE, Links
from worker.masking import Masker
from worker.retry import refusal
from worker.slack import texts

Block = dict[str, Any]

ACTION_CANCEL = "skyrun_cancel"
ACTION_RETRY = "skyrun_retry"
"""The Retry button of a failed, cancelled or timed-out run (its value: the run id)."""
ACTION_APPROVE = "skyrun_approve"
"""Budgets (issue 14): the Approve button of a run that waits for approval."""
ACTION_LINK_PREFIX = "skyrun_link_"
"""URL buttons still send Slack an interaction; the bot acknowledges these without acting."""
ACTIONS_BLOCK = "skyrun_actions"
SECTION_LIMIT = 2900
"""Slack caps a section's text at 3000 characters; keep a margin for the wrapping."""
TAIL_LINES = 15
TAIL_CHARS = 2500


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: only &, < and > are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    """Text for inside a ``` block: escaped, and unable to close the block early."""
    return escape(text).replace("```", "'''")


def clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_time(text: str) -> str:
    """A timestamp Slack shows in each reader's own time zone (UTC as the fallback)."""
    when = parse_time(text)
    if when is None:
        return "now"
    return f"<!date^{int(when.timestamp())}^{{time}}|{when:%H:%M} UTC>"


def run_duration(progress: RunProgress) -> float | None:
    return seconds_between(progress.started_at, progress.finished_at)


def target(progress: RunProgress) -> str:
    """`repo@ref` as users type it."""
    return f"{progress.repo}@{progress.ref}" if progress.ref else progress.repo


def who(progress: RunProgress) -> str:
    name = progress.requested_by
    if progress.trigger is Trigger.SLACK and re.fullmatch(r"[UW][A-Z0-9]+", name or ""):
        return f"<@{name}>"
    return escape(name) or "someone"


def rerun(progress: RunProgress) -> str:
    if progress.pr_number is not None:
        return texts.RERUN_PR.format(pr=progress.pr_number)
    if REPO_RE.fullmatch(progress.repo):
        return texts.RERUN_SLACK.format(target=escape(target(progress)))
    ref = f" --ref {progress.ref}" if progress.ref else ""
    return texts.RERUN_CLI.format(repo=escape(progress.repo), ref=escape(ref))


def _log_link(links: Links | None, progress: RunProgress, stage: str) -> str:
    if links is None:
        return texts.THE_LOG
    found = next((s for s in progress.stages if s.name == stage), None)
    url = links.stage_log(progress.run_id, found) if found else links.log(progress.run_id, stage)
    return texts.FULL_LOG.format(url=url)


def next_step(progress: RunProgress, links: Links | None) -> str:
    """What the person who asked should do now, or "" when nothing is needed."""
    state = progress.state
    if state is RunState.FAILED:
        failed = progress.failed_stage
        if failed is not None:
            return texts.NEXT_STAGE_FAILED.format(
                stage=escape(failed.name),
                log=_log_link(links, progress, failed.name),
                rerun=rerun(progress),
            )
        return texts.NEXT_SETUP_FAILED.format(rerun=rerun(progress))
    if state is RunState.TIMED_OUT:
        return texts.NEXT_TIMED_OUT.format(rerun=rerun(progress))
    if state is RunState.CANCELLED:
        return texts.NEXT_CANCELLED.format(rerun=rerun(progress))
    if state is RunState.DENIED:
        return texts.NEXT_DENIED
    return ""


def stage_line(stage: StageProgress, links: Links | None = None) -> str:
    icon = texts.STAGE_ICONS[stage.state]
    if stage.reused_from:
        url = links.run(stage.reused_from) if links else ""
        detail = texts.STAGE_REUSED.format(url=url, run_id=escape(stage.reused_from))
    elif stage.state is StageState.PENDING:
        detail = texts.STAGE_PENDING
    elif stage.state is StageState.RUNNING:
        detail = texts.STAGE_RUNNING.format(
            cluster=escape(stage.cluster), since=slack_time(stage.started_at)
        )
    elif stage.state is StageState.SKIPPED:
        detail = stage.state.value
    else:
        detail = texts.STAGE_DONE.format(
            state=stage.state.value, duration=format_duration(stage.duration_s or 0)
        )
        if stage.state is StageState.FAILED and stage.exit_code not in (None, 0):
            detail += texts.STAGE_EXIT.format(code=stage.exit_code)
    if stage.rerun_reason:
        detail += texts.STAGE_RERUN.format(reason=escape(stage.rerun_reason))
    if stage.infra_recovered:
        detail += texts.STAGE_RECOVERED.format(note=format_recoveries(stage.infra_recovered))
    if (note := cluster_note(stage)) and not stage.reused_from:
        detail += texts.STAGE_CLUSTER_NOTE.format(note=escape(note))
    return texts.STAGE_LINE.format(icon=icon, name=escape(stage.name), detail=detail)


def cost_lines(progress: RunProgress) -> str:
    """The estimate and the clusters' cost, in mrkdwn ("" when the run has neither yet)."""
    lines = []
    approval = progress.approval
    if approval is not None and progress.state is RunState.AWAITING_APPROVAL:
        lines.append(
            texts.APPROVAL_WAITING.format(
                reason=_plain(approval.reason),
                run_id=escape(progress.run_id),
                expires=slack_time(approval.expires_at),
            )
        )
    elif approval is not None and approval.approved_by:
        lines.append(
            texts.APPROVAL_GIVEN.format(
                user=escape(approval.approved_by), reason=_plain(approval.reason)
            )
        )
    estimate = estimate_text(progress)
    if estimate:
        lines.append(texts.COST_ESTIMATE.format(text=_plain(estimate)))
    cost = cost_text(progress)
    if cost:
        template = texts.COST_ACTUAL if progress.state.finished else texts.COST_SO_FAR
        lines.append(template.format(text=_plain(cost)))
    over = over_budget_text(progress)
    if over:
        lines.append(texts.OVER_BUDGET.format(text=_plain(over)))
    return "\n".join(lines)


def _plain(text: str) -> str:
    """Text with no mrkdwn in it: Slack has no escape for `~` (strikethrough), so it reads as ≈."""
    return escape(text).replace("~", "≈")


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}}


def _context(parts: list[str]) -> Block:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": clip(" · ".join(p for p in parts if p))}],
    }


def _link_button(name: str, label: str, url: str) -> Block:
    return {
        "type": "button",
        "action_id": ACTION_LINK_PREFIX + name,
        "text": {"type": "plain_text", "text": label},
        "url": url,
    }


def cancel_button(run_id: str) -> Block:
    return {
        "type": "button",
        "action_id": ACTION_CANCEL,
        "text": {"type": "plain_text", "text": texts.BUTTON_CANCEL},
        "style": "danger",
        "value": run_id,
        "confirm": {
            "title": {"type": "plain_text", "text": texts.CONFIRM_TITLE},
            "text": {"type": "mrkdwn", "text": texts.CONFIRM_TEXT},
            "confirm": {"type": "plain_text", "text": texts.CONFIRM_YES},
            "deny": {"type": "plain_text", "text": texts.CONFIRM_NO},
        },
    }


def retry_button(run_id: str) -> Block:
    return {
        "type": "button",
        "action_id": ACTION_RETRY,
        "text": {"type": "plain_text", "text": texts.BUTTON_RETRY},
        "style": "primary",
        "value": run_id,
    }


def retryable(progress: RunProgress) -> bool:
    """A finished run with a stage to retry from (worker/retry.py decides)."""
    return not refusal(progress, progress.run_id)


def retry_text(progress: RunProgress, links: Links) -> str:
    """For a retry: which stages were reused from which run, and why the others run again."""
    lines = [
        texts.RETRY_TITLE.format(url=links.run(progress.retry_of), run_id=escape(progress.retry_of))
    ]
    by_run: dict[str, list[str]] = {}
    for stage in progress.stages:
        if stage.reused_from:
            by_run.setdefault(stage.reused_from, []).append(f"`{escape(stage.name)}`")
    for run_id, names in by_run.items():
        lines.append(texts.RETRY_REUSED.format(run_id=escape(run_id), stages=", ".join(names)))
    rerun = [
        texts.RETRY_RERUN_STAGE.format(stage=escape(stage.name), reason=escape(stage.rerun_reason))
        for stage in progress.stages
        if not stage.reused_from
    ]
    if rerun:
        lines.append(texts.RETRY_RERUN.format(stages=", ".join(rerun)))
    return "\n".join(lines)


def _log_stage(progress: RunProgress) -> StageProgress | None:
    """The stage whose log matters most now: running, else failed, else the last that ran."""
    for state in (StageState.RUNNING, StageState.FAILED):
        for stage in progress.stages:
            if stage.state is state:
                return stage
    ran = [s for s in progress.stages if s.state not in (StageState.PENDING, StageState.SKIPPED)]
    return ran[-1] if ran else None


def buttons(progress: RunProgress, links: Links, *, run_pages: bool = True) -> list[Block]:
    elements: list[Block] = []
    if run_pages:
        elements.append(_link_button("run", texts.BUTTON_RUN, links.run(progress.run_id)))
        stage = _log_stage(progress)
        if stage is not None:
            url = links.stage_log(progress.run_id, stage)
            elements.append(_link_button("logs", texts.BUTTON_LOGS, url))
    elements.append(
        _link_button("temporal", texts.BUTTON_TEMPORAL, links.temporal(progress.run_id))
    )
    if progress.dashboard_url:
        elements.append(_link_button("dashboard", texts.BUTTON_DASHBOARD, progress.dashboard_url))
    if progress.state is RunState.AWAITING_APPROVAL:
        elements.append(approve_button(progress.run_id))
    if not progress.state.finished:
        elements.append(cancel_button(progress.run_id))
    elif retryable(progress):
        elements.append(retry_button(progress.run_id))
    return elements


def approve_button(run_id: str) -> Block:
    return {
        "type": "button",
        "action_id": ACTION_APPROVE,
        "text": {"type": "plain_text", "text": texts.BUTTON_APPROVE},
        "style": "primary",
        "value": run_id,
    }


def metrics_text(progress: RunProgress, baseline: Baseline | None) -> str:
    lines = [texts.METRICS_TITLE]
    for name, value in sorted(progress.metrics.items()):
        line = texts.METRIC_LINE.format(name=escape(name), value=format_number(value))
        if baseline is not None:
            before = baseline.metrics.get(name)
            line += (
                texts.METRIC_NEW
                if before is None
                else texts.METRIC_CHANGE.format(change=format_change(value, before))
            )
        lines.append(line)
    return "\n".join(lines)


def baseline_note(baseline: Baseline | None, compared_on: str, links: Links) -> str:
    """Which run the metrics are compared with, or that `compared_on` has none ("" when the
    baseline is not known: then nothing is said)."""
    if baseline is not None:
        return texts.BASELINE_NOTE.format(
            url=links.run(baseline.run_id),
            run_id=escape(baseline.run_id),
            branch=f"`{escape(baseline.ref)}`",
        )
    if compared_on:
        return texts.NO_BASELINE.format(branch=f"`{escape(compared_on)}`")
    return ""


def gate_failed(progress: RunProgress) -> bool:
    return progress.state is RunState.SUCCEEDED and progress.verdict is Verdict.FAILED


def state_words(progress: RunProgress) -> tuple[str, str]:
    """The run's icon and words: a failed gate reads as failed although every stage succeeded."""
    if gate_failed(progress):
        return texts.RUN_ICONS[RunState.FAILED], texts.GATES_FAILED_WORDS
    return texts.RUN_ICONS[progress.state], texts.RUN_WORDS[progress.state]


def gate_line(gate: GateResult) -> str:
    value = NO_VALUE if gate.value is None else format_number(gate.value)
    threshold = NO_VALUE if gate.threshold is None else format_number(gate.threshold)
    detail = texts.GATE_DETAIL.format(value=value, threshold=threshold)
    if gate.note:
        detail += texts.GATE_NOTE.format(note=escape(gate.note))
    template = texts.GATE_PASSED_LINE if gate.passed else texts.GATE_FAILED_LINE
    return template.format(expr=escape(gate.expr).replace("`", "'"), detail=detail)


def gates_text(progress: RunProgress) -> str:
    return "\n".join([texts.GATES_TITLE, *(gate_line(gate) for gate in progress.gates)])


def report_text(progress: RunProgress, links: Links) -> str:
    report = "\n\n".join(s.report.strip() for s in progress.stages if s.report.strip())
    if not report:
        return ""
    body = _code(report)
    limit = SECTION_LIMIT - len(texts.REPORT_TITLE) - 200
    if len(body) > limit:
        return f"{texts.REPORT_TITLE}\n```{body[:limit]}```\n" + texts.TRUNCATED.format(
            url=links.run(progress.run_id)
        )
    return f"{texts.REPORT_TITLE}\n```{body}```"


def fallback_text(progress: RunProgress) -> str:
    """The plain text of the message: notifications and clients without Block Kit show it."""
    return texts.FALLBACK.format(what=target(progress), state=state_words(progress)[1])


def run_blocks(
    progress: RunProgress,
    links: Links,
    *,
    baseline: Baseline | None = None,
    compared_on: str = "",
    run_pages: bool = True,
    masker: Masker | None = None,
) -> list[Block]:
    """The progress message: title, stages, outcome, metrics (against `baseline`, the run's
    baseline, looked for on the branch `compared_on`), report and buttons.

    With a masker, secrets are masked in the run before rendering (so no cut to Slack's limits
    leaves part of one) and in the blocks.
    """
    if masker is not None:
        progress = masker.mask_data(progress)
        plain = run_blocks(
            progress, links, baseline=baseline, compared_on=compared_on, run_pages=run_pages
        )
        return masker.mask_data(plain)
    state = progress.state
    icon, words = state_words(progress)
    title = texts.TITLE.format(icon=icon, what=escape(target(progress)), state=words)
    took = run_duration(progress) if state.finished else None
    context = [
        texts.CONTEXT_RUN.format(run_id=escape(progress.run_id)),
        texts.CONTEXT_COMMIT.format(commit=progress.commit[:7]) if progress.commit else "",
        texts.CONTEXT_BY.format(
            trigger=texts.TRIGGER_WORDS.get(progress.trigger.value, progress.trigger.value),
            who=who(progress),
        ),
        texts.CONTEXT_PR.format(pr=progress.pr_number) if progress.pr_number is not None else "",
        texts.CONTEXT_RETRY.format(url=links.run(progress.retry_of), run_id=progress.retry_of)
        if progress.retry_of
        else "",
        texts.CONTEXT_BACKEND.format(backend=escape(progress.backend)) if progress.backend else "",
        texts.CONTEXT_TOOK.format(duration=format_duration(took)) if took is not None else "",
    ]
    blocks: list[Block] = [_section(title), _context(context)]
    if state is RunState.QUEUED and progress.queue_position is not None:
        blocks.append(_section(escape(queued_line(progress))))  # concurrency caps
    if progress.stages:
        lines = [stage_line(s, links) for s in progress.stages]
        flow = stage_flow(progress.stage_needs, lambda name: f"`{name}`")
        if flow:
            lines.insert(0, texts.STAGE_FLOW.format(flow=flow))
        blocks.append(_section("\n".join(lines)))
        if progress.retry_of:
            blocks.append(_section(retry_text(progress, links)))
    elif not state.finished:
        blocks.append(_section(texts.PLANNING))
    costs = cost_lines(progress)
    if costs:
        blocks.append(_context([costs]))
    if progress.error:
        text = texts.ERROR.format(error=escape(progress.error))
        hint = next_step(progress, links if run_pages else None)
        if hint:
            text += "\n" + texts.NEXT.format(hint=hint)
        if state.finished and retryable(progress):
            text += "\n" + texts.RETRY_HINT.format(run_id=escape(progress.run_id))
        blocks.append(_section(text))
    if gate_failed(progress):
        summary = escape(failure_summary(progress.failed_gates[0]))
        text = texts.GATES_FAILED.format(summary=summary)
        text += "\n" + texts.NEXT.format(hint=texts.NEXT_GATES_FAILED.format(rerun=rerun(progress)))
        blocks.append(_section(text))
    if state.finished and progress.gates:
        blocks.append(_section(gates_text(progress)))
    if state.finished and progress.metrics:
        blocks.append(_section(metrics_text(progress, baseline)))
        note = baseline_note(baseline, compared_on, links)
        if note:
            blocks.append(_context([note]))
    if state.finished:
        report = report_text(progress, links)
        if report:
            blocks.append(_section(report))
    blocks.append(
        {
            "type": "actions",
            "block_id": ACTIONS_BLOCK,
            "elements": buttons(progress, links, run_pages=run_pages),
        }
    )
    return blocks


def stage_reply(
    progress: RunProgress, stage: StageProgress, links: Links, *, run_pages: bool = True
) -> str:
    """The thread reply when a stage ends: outcome, metrics, and for a failure its log's end."""
    exit_text = (
        texts.STAGE_EXIT.format(code=stage.exit_code)
        if stage.state is StageState.FAILED and stage.exit_code not in (None, 0)
        else ""
    )
    lines = [
        texts.REPLY_STAGE.format(
            icon=texts.STAGE_ICONS[stage.state],
            name=escape(stage.name),
            state=stage.state.value,
            duration=format_duration(stage.duration_s or 0),
            exit=exit_text,
        )
    ]
    if stage.error and stage.error != progress.error:
        lines.append(texts.ERROR.format(error=escape(stage.error)))
    if stage.metrics:
        shown = ", ".join(
            f"`{escape(name)}` {format_number(value)}"
            for name, value in sorted(stage.metrics.items())
        )
        lines.append(texts.REPLY_METRICS.format(metrics=shown))
    if stage.state is StageState.FAILED and stage.log_tail:
        tail = "\n".join(stage.log_tail[-TAIL_LINES:])[-TAIL_CHARS:]
        lines.append(texts.REPLY_TAIL.format(tail=_code(tail)))
    if run_pages:
        url = links.stage_log(progress.run_id, stage)
        lines.append(texts.REPLY_LOG.format(url=url, name=escape(stage.name)))
    return clip("\n".join(lines), 3900)


def final_reply(progress: RunProgress, links: Links, *, run_pages: bool = True) -> str:
    """The thread reply when the run ends, addressed to whoever asked (so Slack notifies them)."""
    mention = who(progress) + " " if progress.trigger is Trigger.SLACK else ""
    took = run_duration(progress)
    icon, words = state_words(progress)
    lines = [
        texts.REPLY_FINAL.format(
            mention=mention,
            icon=icon,
            state=words,
            took=f" in {format_duration(took)}" if took is not None else "",
        )
    ]
    if gate_failed(progress):
        summary = escape(failure_summary(progress.failed_gates[0]))
        lines.append(texts.GATES_FAILED.format(summary=summary))
    if progress.error:
        lines.append(texts.ERROR.format(error=escape(progress.error)))
        hint = next_step(progress, links if run_pages else None)
        if hint:
            lines.append(texts.NEXT.format(hint=hint))
        if retryable(progress):
            lines.append(texts.RETRY_HINT.format(run_id=escape(progress.run_id)))
    return clip("\n".join(lines), 3900)
