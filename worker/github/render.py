"""Markdown for GitHub from a run's progress: the sticky comment, check-run output, replies.

Pure functions over plain data; every text comes from `texts`. Long parts are folded or cut so
a comment stays under GitHub's 65,536 characters, with links to the full logs and run page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from worker.baseline import Baseline
from worker.capacity import queued_line, queued_title
from worker.commands import COMMENT_USAGE
from worker.contract import (
    RunProgress,
    RunRequest,
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
    format_time,
    seconds_between,
    stage_flow,
)
from worker.gates import failure_summary
from worker.github import texts
from worker.github.models import ReplyInput, ReplyKind
from worker.links import Links
from worker.masking import Masker
from worker.retry import refusal
from worker.runcontrol import RunSummary

SHORT_SHA = 7
MAX_METRICS = 50
MAX_REPORT_CHARS = 25_000
MAX_LOG_LINE_CHARS = 300
MAX_ERROR_CHARS = 2_000
MAX_GATES_SHOWN = 50
CUT_NOTE = "\n\n… _(cut to fit GitHub's size limit; everything is on the [run page]({run_url}))_"
_BACKTICKS = re.compile(r"`+")
RETRY_TRIGGERS = (Trigger.COMMENT, Trigger.PULL_REQUEST)
"""Runs of a pull request's lane: the ones `/skyrun retry` on it finds."""


@dataclass
class RunView:
    """What one report renders: the run, where it came from, and what it is compared with."""

    progress: RunProgress
    request: RunRequest
    links: Links
    base_ref: str = ""
    """The branch the baseline was looked for on ("" while not known: no "none found" note)."""
    baseline: Baseline | None = None


def short(sha: str) -> str:
    return sha[:SHORT_SHA] if len(sha) == 40 else sha


def code(text: str) -> str:
    """Text safe inside a `code span` (no backticks, one line)."""
    return text.replace("`", "'").replace("\n", " ")


def fence_for(text: str) -> str:
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    return "`" * max(3, longest + 1)


def cut(text: str, limit: int, note: str = "") -> str:
    """`text` within `limit` characters, cut at a line end and followed by `note` if it was cut."""
    if len(text) <= limit:
        return text
    keep = text[: max(0, limit - len(note))]
    if "\n" in keep:
        keep = keep[: keep.rfind("\n")]
    return keep + note


def _trigger(request: RunRequest) -> str:
    user = request.requested_by or "someone"
    if request.trigger is Trigger.COMMENT:
        return texts.TRIGGER_COMMENT.format(user=user)
    if request.trigger is Trigger.PUSH:
        return texts.TRIGGER_PUSH.format(user=user)
    if request.trigger is Trigger.PULL_REQUEST:
        return texts.TRIGGER_PULL_REQUEST.format(user=user)
    if request.trigger is Trigger.MERGE_GROUP:
        return texts.TRIGGER_MERGE_GROUP.format(user=user)
    return texts.TRIGGER_OTHER.format(user=user)


def gate_failed(progress: RunProgress) -> bool:
    """Every stage succeeded and a gate failed: the check run fails all the same."""
    return progress.state is RunState.SUCCEEDED and progress.verdict is Verdict.FAILED


def conclusion(progress: RunProgress) -> str:
    """The check run's conclusion of a finished run: its state's, or `failure` on a failed gate."""
    return "failure" if gate_failed(progress) else texts.CHECK_CONCLUSION[progress.state]


def _header(view: RunView) -> list[str]:
    progress = view.progress
    failed = gate_failed(progress)
    lines = [
        texts.HEADER.format(
            emoji=texts.STATE_EMOJI[RunState.FAILED if failed else progress.state],
            run_id=progress.run_id,
            run_url=view.links.run(progress.run_id),
            state=texts.GATES_FAILED_WORDS if failed else texts.STATE_WORDS[progress.state],
        )
    ]
    ref = code(progress.ref or view.request.default_branch or "default branch")
    if progress.commit:
        duration = seconds_between(progress.started_at, progress.finished_at)
        lines.append(
            texts.SUBJECT.format(
                commit=short(progress.commit),
                ref=ref,
                trigger=_trigger(view.request),
                duration=format_duration(duration) if duration is not None else "…",
            )
        )
    else:
        lines.append(texts.SUBJECT_NO_COMMIT.format(ref=ref, trigger=_trigger(view.request)))
    if progress.state is RunState.QUEUED and progress.queue_position is not None:
        lines.append(queued_line(progress))  # concurrency caps: its place in line
    target = view.request.github
    if (
        view.request.trigger is Trigger.COMMENT
        and target is not None
        and target.head_repo
        and target.head_repo.lower() != view.request.repo.lower()
        and progress.commit
    ):
        lines.append(
            texts.FORK_COMMIT.format(
                head_repo=code(target.head_repo), user=view.request.requested_by
            )
        )
    return lines


def stage_flow_line(view: RunView) -> str:
    """`Stages: `prep` → `a` ∥ `b` → `join`` when some stages run at once ("" otherwise)."""
    flow = stage_flow(view.progress.stage_needs, lambda name: f"`{name}`")
    return texts.STAGE_FLOW.format(flow=flow) if flow else ""


def stages_table(view: RunView) -> str:
    rows = [texts.STAGES_HEADING]
    flow = stage_flow_line(view)
    if flow:
        rows.insert(0, flow + "\n")
    for stage in view.progress.stages:
        started = stage.state is not StageState.PENDING and stage.state is not StageState.SKIPPED
        rows.append(
            texts.STAGE_ROW.format(
                name=stage.name,
                state=texts.REUSED_STATE if stage.reused_from else texts.STAGE_EMOJI[stage.state],
                duration=format_duration(stage.duration_s)
                if stage.duration_s is not None
                else ("…" if stage.state is StageState.RUNNING else NO_VALUE),
                cluster=stage.cluster,
                shared=(
                    texts.CLUSTER_NOTE.format(note=cluster_note(stage))
                    if cluster_note(stage)
                    else ""
                )
                if stage.launched or not started
                else texts.SHARED_CLUSTER,
                recovered=texts.RECOVERED.format(note=format_recoveries(stage.infra_recovered))
                if stage.infra_recovered
                else "",
                log=texts.LOG_LINK.format(url=view.links.stage_log(view.progress.run_id, stage))
                if started
                else NO_VALUE,
            )
        )
    return "\n".join(rows)


def _cluster_shown(stage: StageProgress, started: bool) -> str:
    """After the cluster's name: shared with an earlier stage, warm, or provisioned ahead."""
    if started and not stage.launched:
        return texts.SHARED_CLUSTER
    note = cluster_note(stage)
    return texts.CLUSTER_NOTE.format(note=note) if note else ""


def metrics_section(view: RunView) -> str:
    metrics = view.progress.metrics
    if not metrics:
        return ""
    names = sorted(metrics)
    shown = names[:MAX_METRICS]
    baseline = view.baseline
    lines = [texts.METRICS_HEADING, ""]
    if baseline is not None:
        lines.append(
            texts.METRICS_TABLE_BASE.format(
                ref=code(baseline.ref),
                base_url=view.links.run(baseline.run_id),
                commit=short(baseline.commit),
            )
        )
        for name in shown:
            base = baseline.metrics.get(name)
            lines.append(
                texts.METRIC_ROW_BASE.format(
                    name=name,
                    value=format_number(metrics[name]),
                    base=NO_VALUE if base is None else format_number(base),
                    change="new" if base is None else format_change(metrics[name], base),
                )
            )
    else:
        lines.append(texts.METRICS_TABLE)
        lines += [
            texts.METRIC_ROW.format(name=name, value=format_number(metrics[name])) for name in shown
        ]
    if len(names) > len(shown):
        lines += [
            "",
            texts.METRICS_FOLDED.format(
                count=len(names) - len(shown), run_url=view.links.run(view.progress.run_id)
            ),
        ]
    if baseline is None and view.base_ref and view.progress.state.finished:
        lines += ["", texts.NO_BASELINE.format(ref=code(view.base_ref))]
    return "\n".join(lines)


def _markdown_text(text: str) -> str:
    """Plain text safe in Markdown prose: no math (`$`), strikethrough (`~`) or tags."""
    for char in ("\\", "$", "~", "*", "<", ">", "|"):
        text = text.replace(char, "\\" + char)
    return text


def cost_section(view: RunView) -> str:
    """The estimate (before any launch) and the clusters' cost (so far, while running)."""
    progress = view.progress
    lines = []
    approval = progress.approval
    if approval is not None and progress.state is RunState.AWAITING_APPROVAL:
        lines.append(
            texts.APPROVAL_WAITING.format(
                reason=_markdown_text(approval.reason),
                run_id=progress.run_id,
                expires=format_time(approval.expires_at),
            )
        )
    elif approval is not None and approval.approved_by:
        lines.append(
            texts.APPROVAL_GIVEN.format(
                user=code(approval.approved_by), reason=_markdown_text(approval.reason)
            )
        )
    estimate = estimate_text(progress)
    if estimate:
        lines.append(texts.COST_ESTIMATE.format(text=_markdown_text(estimate)))
    cost = cost_text(progress)
    if cost:
        template = texts.COST_ACTUAL if progress.state.finished else texts.COST_SO_FAR
        lines.append(template.format(text=_markdown_text(cost)))
    over = over_budget_text(progress)
    if over:
        lines.append(texts.OVER_BUDGET.format(text=_markdown_text(over)))
    return "  \n".join(lines)


def gates_section(view: RunView) -> str:
    """Each gate passed or failed, with the run's value and the threshold it was held to."""
    gates = view.progress.gates
    if not gates:
        return ""
    lines = [texts.GATES_HEADING, "", texts.GATES_TABLE]
    for gate in gates[:MAX_GATES_SHOWN]:
        lines.append(
            texts.GATE_ROW.format(
                expr=code(gate.expr),
                result=texts.GATE_PASSED if gate.passed else texts.GATE_FAILED,
                value=NO_VALUE if gate.value is None else format_number(gate.value),
                threshold=NO_VALUE if gate.threshold is None else format_number(gate.threshold),
                note=_cell(gate.note) or NO_VALUE,
            )
        )
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text safe in a table cell (one line, no column breaks)."""
    return text.replace("\n", " ").replace("|", "\\|")


def report_section(view: RunView) -> str:
    reports = [s for s in view.progress.stages if s.report.strip()]
    if not reports:
        return ""
    parts = [texts.REPORT_HEADING, ""]
    for stage in reports:
        if len(reports) > 1:
            parts += [texts.STAGE_REPORT_HEADING.format(stage=stage.name), ""]
        parts += [stage.report.strip(), ""]
    note = texts.REPORT_TRUNCATED.format(run_url=view.links.run(view.progress.run_id))
    return cut("\n".join(parts).rstrip(), MAX_REPORT_CHARS, note)


def _error_block(error: str) -> str:
    error = cut(error, MAX_ERROR_CHARS, "\n…")
    fence = fence_for(error)
    return f"{fence}text\n{error}\n{fence}"


def _log_tail(view: RunView, stage: StageProgress) -> str:
    lines = [cut(line, MAX_LOG_LINE_CHARS, " …") for line in stage.log_tail]
    body = "\n".join(lines)
    return texts.LOG_TAIL.format(
        count=len(lines),
        stage=stage.name,
        fence=fence_for(body),
        lines=body,
        log_url=view.links.stage_log(view.progress.run_id, stage),
    )


def outcome_section(view: RunView) -> str:
    """What went wrong and what to do next; empty while running and after success."""
    progress = view.progress
    comment = view.request.trigger is Trigger.COMMENT
    if progress.state is RunState.FAILED:
        failed = progress.failed_stage
        if failed is not None:
            parts = [texts.FAILED_STAGE_HEADING.format(stage=failed.name), ""]
            parts += [_error_block(failed.error or progress.error), ""]
            if failed.log_tail:
                parts += [_log_tail(view, failed), ""]
            parts.append(
                texts.NEXT_COMMENT_FAILED.format(stage=failed.name)
                if comment
                else texts.NEXT_PUSH_FAILED
            )
            parts += retry_next(view)
            return "\n".join(parts)
        return "\n".join(
            [
                texts.FAILED_RUN_HEADING,
                "",
                _error_block(progress.error),
                "",
                texts.NEXT_COMMENT_RUN_FAILED if comment else texts.NEXT_PUSH_FAILED,
            ]
        )
    if gate_failed(progress):
        return "\n".join(
            [
                texts.GATES_FAILED_HEADING.format(
                    summary=failure_summary(progress.failed_gates[0])
                ),
                "",
                texts.GATES_FAILED_NEXT,
            ]
        )
    if progress.state is RunState.TIMED_OUT:
        return "\n".join([_error_block(progress.error), "", texts.TIMED_OUT, *retry_next(view)])
    if progress.state is RunState.CANCELLED:
        cancelled = texts.CANCELLED.format(error=progress.error or "cancelled")
        return "\n".join([cancelled, *retry_next(view)])
    if progress.state is RunState.DENIED:
        return texts.DENIED.format(reason=progress.error.rstrip("."))
    if progress.state is RunState.SKIPPED:
        return texts.SKIPPED.format(reason=progress.error.rstrip("."))
    return ""


def retry_next(view: RunView) -> list[str]:
    """The `/skyrun retry` hint under a failure, for runs a pull request comment can retry."""
    if view.progress.pr_number is None or view.request.trigger not in RETRY_TRIGGERS:
        return []
    if refusal(view.progress, view.progress.run_id):
        return []
    return ["", texts.NEXT_RETRY]


def retry_section(view: RunView) -> str:
    """For a retry: which stages were reused from which run, and why the others run again."""
    progress = view.progress
    if not progress.retry_of:
        return ""
    lines = [
        texts.RETRY_HEADING.format(
            run_id=progress.retry_of, run_url=view.links.run(progress.retry_of)
        ),
        "",
    ]
    by_run: dict[str, list[str]] = {}
    for stage in progress.stages:
        if stage.reused_from:
            by_run.setdefault(stage.reused_from, []).append(f"`{stage.name}`")
    for run_id, names in by_run.items():
        lines.append(texts.RETRY_REUSED.format(run_id=run_id, stages=", ".join(names)))
    rerun = [
        texts.RETRY_RERUN_STAGE.format(stage=stage.name, reason=stage.rerun_reason)
        for stage in progress.stages
        if not stage.reused_from
    ]
    if rerun:
        lines.append(texts.RETRY_RERUN.format(stages=", ".join(rerun)))
    return "\n".join(lines)


def links_line(view: RunView) -> str:
    run_id = view.progress.run_id
    line = texts.LINKS.format(
        run_url=view.links.run(run_id), temporal_url=view.links.temporal(run_id)
    )
    if view.progress.dashboard_url:
        line += texts.DASHBOARD_LINK.format(url=view.progress.dashboard_url)
    return line


def _join(sections: Sequence[str]) -> str:
    return "\n\n".join(s for s in sections if s)


def run_comment(view: RunView, masker: Masker | None = None) -> str:
    """The sticky comment of a run: tagged, so later reports find and edit it.

    With a masker, secrets are masked in the run before rendering (so no cut splits one) and
    in the result.
    """
    masker = masker or Masker()
    view = masker.mask_data(view)
    header = "\n".join(_header(view))
    body = _join(
        [
            texts.RUN_TAG.format(run_id=view.progress.run_id) + "\n" + header,
            cost_section(view),
            stages_table(view) if view.progress.stages else "",
            retry_section(view),
            outcome_section(view),
            gates_section(view),
            metrics_section(view),
            report_section(view),
            links_line(view),
        ]
    )
    note = CUT_NOTE.format(run_url=view.links.run(view.progress.run_id))
    return cut(masker.mask(body), texts.MAX_COMMENT_CHARS, note)


def is_run_comment(body: str, run_id: str | None = None) -> bool:
    first = body.split("\n", 1)[0]
    if run_id is not None:
        return first == texts.RUN_TAG.format(run_id=run_id)
    prefix = texts.RUN_TAG.split("{", 1)[0]
    return first.startswith(prefix)


def outdated(body: str, newer_run_id: str, links: Links) -> str:
    """An older run's comment, folded under a note pointing at the newer run."""
    tag, _, rest = body.partition("\n")
    note = texts.OUTDATED_NOTE.format(run_id=newer_run_id, run_url=links.run(newer_run_id))
    wrapper = texts.OUTDATED_FOLD.format(body="")
    room = (
        texts.MAX_COMMENT_CHARS - len(tag) - len(texts.OUTDATED_TAG) - len(note) - len(wrapper) - 8
    )
    folded = texts.OUTDATED_FOLD.format(body=cut(rest, room, "\n…"))
    return "\n".join([tag, texts.OUTDATED_TAG, note, "", folded])


def is_outdated(body: str) -> bool:
    return texts.OUTDATED_TAG in body.split("\n", 2)[:2]


def check_title(progress: RunProgress) -> str:
    state = progress.state
    if state is RunState.QUEUED:
        return queued_title(progress) or texts.CHECK_TITLE_QUEUED
    if state is RunState.RUNNING:
        for index, stage in enumerate(progress.stages, 1):
            if stage.state is StageState.RUNNING:
                return texts.CHECK_TITLE_RUNNING.format(
                    stage=stage.name, index=index, count=len(progress.stages)
                )
        return texts.CHECK_TITLE_PREPARING
    if gate_failed(progress):
        gates = progress.failed_gates
        summary = failure_summary(gates[0])
        if len(gates) > 1:
            return texts.CHECK_TITLE_GATES_FAILED.format(summary=summary, more=len(gates) - 1)
        return texts.CHECK_TITLE_GATE_FAILED.format(summary=summary)
    if state is RunState.SUCCEEDED and progress.gates:
        return texts.CHECK_TITLE_GATES_PASSED.format(
            count=len(progress.stages), gates=len(progress.gates)
        )
    if state is RunState.SUCCEEDED:
        return texts.CHECK_TITLE_SUCCEEDED.format(count=len(progress.stages))
    if state is RunState.FAILED:
        failed = progress.failed_stage
        if failed is not None:
            return texts.CHECK_TITLE_FAILED_STAGE.format(stage=failed.name)
        return texts.CHECK_TITLE_FAILED
    return texts.CHECK_TITLE_OTHER.format(state=texts.STATE_WORDS[state])


def check_output(view: RunView, masker: Masker | None = None) -> dict[str, str]:
    """The check run's title, summary (stages, metrics) and text (what failed, the report)."""
    masker = masker or Masker()
    view = masker.mask_data(view)
    note = CUT_NOTE.format(run_url=view.links.run(view.progress.run_id))
    summary = _join(
        [
            "\n".join(_header(view)[1:]),
            cost_section(view),
            stages_table(view) if view.progress.stages else "",
            retry_section(view),
            gates_section(view),
            metrics_section(view),
            links_line(view),
        ]
    )
    text = _join([outcome_section(view), report_section(view)])
    output = {
        "title": masker.mask(check_title(view.progress)),
        "summary": cut(masker.mask(summary), texts.MAX_CHECK_TEXT_CHARS, note),
    }
    if text:
        output["text"] = cut(masker.mask(text), texts.MAX_CHECK_TEXT_CHARS, note)
    return output


def reply(
    data: ReplyInput,
    links: Links,
    runs: Sequence[RunSummary] = (),
    masker: Masker | None = None,
) -> str:
    """A reply to a comment command, tagged with its delivery (so a retry can find it)."""
    masker = masker or Masker()
    data, runs = masker.mask_data(data), masker.mask_data(list(runs))
    kind = data.kind
    if kind is ReplyKind.HELP:
        text = texts.REPLY_HELP.format(usage=COMMENT_USAGE)
    elif kind is ReplyKind.USAGE:
        text = texts.REPLY_USAGE.format(error=data.detail.rstrip("."), usage=COMMENT_USAGE)
    elif kind is ReplyKind.DENIED:
        text = texts.REPLY_DENIED.format(reason=data.detail.rstrip("."))
    elif kind is ReplyKind.CANCELLED:
        names = ", ".join(f"[`{run_id}`]({links.run(run_id)})" for run_id in data.run_ids)
        text = texts.REPLY_CANCELLED.format(runs=names)
    elif kind is ReplyKind.NOTHING_TO_CANCEL:
        text = texts.REPLY_NOTHING_TO_CANCEL
    elif kind is ReplyKind.RETRY_REFUSED:
        text = texts.REPLY_RETRY_REFUSED.format(reason=data.detail.rstrip("."))
    elif kind is ReplyKind.ALREADY_RETRIED:
        retried, retry_id = data.run_ids
        text = texts.REPLY_ALREADY_RETRIED.format(
            run_id=retried,
            run_url=links.run(retried),
            retry_id=retry_id,
            retry_url=links.run(retry_id),
        )
    elif kind is ReplyKind.APPROVED:
        names = ", ".join(f"[`{run_id}`]({links.run(run_id)})" for run_id in data.run_ids)
        text = texts.REPLY_APPROVED.format(runs=names)
    elif kind is ReplyKind.NOTHING_TO_APPROVE:
        text = texts.REPLY_NOTHING_TO_APPROVE
    elif kind is ReplyKind.ALREADY_RUNNING:
        run_id = data.run_ids[0]
        text = texts.REPLY_ALREADY_RUNNING.format(
            commit=short(data.commit), run_id=run_id, run_url=links.run(run_id)
        )
    else:
        text = status_table(runs, links)
    body = masker.mask(f"{reply_tag(data.command.delivery_id)}\n{text}")
    return cut(body, texts.MAX_COMMENT_CHARS)


def reply_tag(delivery_id: str) -> str:
    return texts.REPLY_TAG.format(delivery=code(delivery_id).replace("--", ""))


def status_table(runs: Sequence[RunSummary], links: Links) -> str:
    if not runs:
        return texts.REPLY_STATUS_EMPTY
    rows = [texts.REPLY_STATUS_HEADING]
    for run in runs:
        rows.append(
            texts.REPLY_STATUS_ROW.format(
                run_id=run.run_id,
                run_url=links.run(run.run_id),
                state=f"{texts.STATE_EMOJI[run.state]} {run.state.value}",
                commit=short(run.commit) or NO_VALUE,
                user=f"@{run.requested_by}" if run.requested_by else NO_VALUE,
                started=format_time(run.started_at) or NO_VALUE,
            )
        )
    return "\n".join(rows)
