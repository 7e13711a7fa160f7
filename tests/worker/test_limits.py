"""Limits on requests and messages: every refusal names the field and the limit."""

from __future__ import annotations

import dataclasses

import pytest
from temporalio.converter import DataConverter

from worker import limits
from worker.contract import (
    GitHubTarget,
    RunProgress,
    RunRequest,
    RunResult,
    RunState,
    SlackTarget,
    StageProgress,
    StageState,
    Trigger,
)
from worker.limits import (
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENVS,
    MAX_ERROR_CHARS,
    MAX_METRIC_NAME_CHARS,
    MAX_PIPELINE_TASKS_BYTES,
    MAX_PREPARED_BYTES,
    MAX_REF_CHARS,
    MAX_REQUEST_BYTES,
    MAX_STAGE_METRICS,
    MAX_STAGE_NAME_CHARS,
    MAX_STAGES,
    MAX_TASK_FILE_BYTES,
    MAX_TEMPORAL_PAYLOAD_BYTES,
    RequestTooLarge,
    bounded,
    check_request,
    cut_encoded,
    encoded_chars,
    payload_bytes,
)
from worker.logparse import parse_metrics, parse_report, tail_lines
from worker.models import PlannedStage, PrepareOutput, ReportInput, StageInput


def request(**fields: object) -> RunRequest:
    values: dict[str, object] = {"repo": "acme/ml", "clone_url": "https://github.test/acme/ml"}
    values.update(fields)
    return RunRequest(**values)  # type: ignore[arg-type]


def refusal(req: RunRequest) -> str:
    with pytest.raises(RequestTooLarge) as info:
        check_request(req)
    return str(info.value)


def temporal_bytes(value: object) -> int:
    return len(DataConverter.default.payload_converter.to_payloads([value])[0].data)


def test_a_request_at_each_limit_passes() -> None:
    envs = {f"K{i}".ljust(MAX_ENV_NAME_CHARS, "_"): "v" * 300 for i in range(MAX_ENVS)}
    check_request(
        request(
            envs=envs,
            stages=["s" * MAX_STAGE_NAME_CHARS] * MAX_STAGES,
            ref="r" * MAX_REF_CHARS,
        )
    )


def test_refusals_are_value_errors_that_name_field_and_limit() -> None:
    assert issubclass(RequestTooLarge, ValueError)
    envs = {f"K{i}": "v" for i in range(MAX_ENVS + 1)}
    assert refusal(request(envs=envs)) == (
        f"KEY=VALUE: {MAX_ENVS + 1} given; the limit is 64" + limits.HINT_ENVS
    )
    long_name = "N" * (MAX_ENV_NAME_CHARS + 1)
    assert refusal(request(envs={long_name: "v"})) == (
        f"the name of env '{'N' * 40}…' is 129 characters long; the limit is 128"
        + limits.HINT_ENV_NAME
    )
    assert refusal(request(stages=["a"] * (MAX_STAGES + 1))) == (
        "stages: 33 given; the limit is 32" + limits.HINT_STAGES
    )
    assert refusal(request(stages=["a" * 65])) == (
        f"stage name '{'a' * 40}…' is 65 characters long; the limit is 64"
    )
    assert refusal(request(ref="r" * 256)) == "the ref is 256 characters long; the limit is 255"


def test_an_env_value_over_the_limit_is_named_but_never_echoed() -> None:
    secret = "s3cr3t" * 1000
    message = refusal(request(envs={"TOKEN": secret}))
    assert message == (
        f"the value of env 'TOKEN' is {len(secret):,} characters long; the limit is 4,096"
        + limits.HINT_ENV_VALUE
    )
    assert "s3cr3t" not in message


def test_a_megabyte_value_is_refused_fast() -> None:
    # The measured attack: `/skyrun echo A=<1 MB>` left its run queued forever.
    message = refusal(request(envs={"A": "x" * 1024 * 1024}))
    assert "the value of env 'A' is 1,048,576 characters long" in message


def test_the_total_is_measured_as_temporal_encodes_it_and_names_the_largest_part() -> None:
    # Each value fits, but astral characters take 12 bytes each once encoded as JSON.
    envs = {f"E{i}": "\U0001f600" * 400 for i in range(10)}
    req = request(envs=envs)
    size = payload_bytes(req)
    assert size == temporal_bytes(req)
    assert size > MAX_REQUEST_BYTES
    assert refusal(req) == limits.E_REQUEST_TOO_LARGE.format(
        size=size,
        limit=MAX_REQUEST_BYTES,
        field="envs",
        field_size=payload_bytes(envs),
    )
    supersedes = ["r" * 200] * 400
    assert "the largest part is supersedes" in refusal(request(supersedes=supersedes))


def test_payload_bytes_matches_temporal_for_nested_requests() -> None:
    req = request(
        trigger=Trigger.COMMENT,
        github=GitHubTarget(installation_id=1, pr_number=7, base_branch="main"),
        slack=SlackTarget(channel="C1", user="U1"),
        envs={"A": 'é\x00"\\\U0001f600'},
        ref="\udc80",  # a lone surrogate is encoded, not an exception
    )
    assert payload_bytes(req) == temporal_bytes(req)
    assert payload_bytes(dataclasses.asdict(req)) == temporal_bytes(req)


def test_bounded_cuts_and_says_how_much() -> None:
    assert bounded("short") == "short"
    text = "x" * (MAX_ERROR_CHARS + 1234)
    cut = bounded(text)
    assert cut == "x" * MAX_ERROR_CHARS + "… (1,234 more characters left out)"
    assert bounded("abcdef", 3) == "abc… (3 more characters left out)"


@pytest.mark.parametrize("text", ["plain ascii" * 50, "\U0001f600" * 300, 'é"\\\x01' * 200, ""])
def test_cut_encoded_keeps_the_longest_prefix_that_fits(text: str) -> None:
    cut = cut_encoded(text, 300)
    assert text.startswith(cut)
    assert encoded_chars(cut) <= 300
    if cut != text:
        assert encoded_chars(text[: len(cut) + 1]) > 300


def test_bounded_can_keep_the_end_of_a_message() -> None:
    message = "Invalid task YAML: " + "[1, 2], " * 10_000 + "is not of type 'string'"
    cut = bounded(message, 200, keep_end=40)
    assert cut.startswith("Invalid task YAML: [1, 2], ")
    assert cut.endswith("is not of type 'string'")
    assert f"… ({len(message) - 200:,} characters left out) …" in cut
    assert len(cut) < 200 + 50
    assert bounded("x" * 10, 4, keep_end=100) == "xx … (6 characters left out) … xx"


@pytest.mark.parametrize("keep_end", [0, 100])
def test_bounded_also_bounds_the_encoded_size(keep_end: int) -> None:
    emoji = "\U0001f600" * 3_000  # within the character limit, but 36,000 bytes encoded
    cut = bounded(emoji, keep_end=keep_end)
    assert encoded_chars(cut) <= limits.ENCODED_FACTOR * MAX_ERROR_CHARS + 100
    assert "characters left out" in cut
    plain = "é" * 1_000  # 6,000 bytes encoded: within the budget
    assert bounded(plain) == plain


# -- the worst case of every payload a run sends --------------------------------------------------

EMOJI_AND_CONTROL = "\U0001f600\x01"  # 12 + 6 bytes in a Temporal payload
GRPC_MESSAGE_CAP = 4 * 1024 * 1024
"""The Temporal server's cap on one request (a workflow task's completion), measured."""


def largest_request() -> RunRequest:
    """A request just inside check_request: long names, long targets, envs filling the rest."""
    req = request(
        repo="o" * 100 + "/" + "r" * 100,
        clone_url="https://github.test/" + "x" * 300,
        ref="r" * MAX_REF_CHARS,
        commit="a" * 40,
        stages=[f"{i:02d}".ljust(MAX_STAGE_NAME_CHARS, "s") for i in range(MAX_STAGES)],
        trigger=Trigger.SLACK,
        requested_by="u" * 100,
        lane="l" * 300,
        delivery_id="d" * 100,
        github=GitHubTarget(1, 2, 3, "b" * MAX_REF_CHARS, "h" * 200),
        slack=SlackTarget("C" * 20, "U" * 20, "https://hooks.slack.test/" + "x" * 200),
        supersedes=["p" * 60] * 4,
    )
    index = 0
    while payload_bytes(req) < MAX_REQUEST_BYTES - MAX_ENV_VALUE_CHARS - 200:
        req.envs[f"E{index}"] = "v" * MAX_ENV_VALUE_CHARS
        index += 1
    check_request(req)
    return req


def largest_stage(index: int, error: str) -> StageProgress:
    """A stage whose log was written to weigh as much as possible in every result field."""
    wide = f"{EMOJI_AND_CONTROL * 400}\n"
    names = [f"{i:03d}".ljust(MAX_METRIC_NAME_CHARS, "m") for i in range(MAX_STAGE_METRICS * 2)]
    log = (
        f"::report\n{wide * 200}::endreport\n"
        + "".join(f"::metric {name}=-1.2345678901234567e-300\n" for name in names)
        + wide * 40
    )
    name = f"{index:02d}".ljust(MAX_STAGE_NAME_CHARS, "s")
    return StageProgress(
        name=name,
        cluster=name,
        state=StageState.FAILED,
        started_at="2026-12-01T10:00:00.000000+00:00",
        finished_at="2026-12-01T10:00:00.000000+00:00",
        duration_s=123456789.123,
        exit_code=100,
        metrics=parse_metrics(log),
        report=parse_report(log),
        log_tail=tail_lines(log, 20),
        error=error,
        launched=True,
    )


def largest_report_input(failed_stages: int) -> ReportInput:
    error = bounded(EMOJI_AND_CONTROL * 100_000)
    progress = RunProgress(
        run_id="x" * 60,
        repo="o" * 201,
        ref="r" * MAX_REF_CHARS,
        commit="a" * 40,
        trigger=Trigger.SLACK,
        requested_by="u" * 100,
        state=RunState.FAILED,
        stages=[largest_stage(i, error if i < failed_stages else "") for i in range(MAX_STAGES)],
        error=error,
        clusters_up=[f"sr-{'x' * 56}"] * MAX_STAGES,
        dashboard_url="https://" + "d" * 200,
        pr_number=2**31,
        base_ref="b" * MAX_REF_CHARS,
    )
    return ReportInput(
        reporter="github",
        run_id="x" * 60,
        request=largest_request(),
        progress=progress,
        handles={"comment_id": "9" * 20, "check_run_id": "9" * 20, "ts": "1" * 20},
        notify_slack="#" + "c" * 80,
    )


def test_every_payload_of_a_run_stays_far_below_temporals_cap() -> None:
    # Why the task files of one run are bounded together, not just one by one.
    assert MAX_STAGES * MAX_TASK_FILE_BYTES >= 4 * MAX_TEMPORAL_PAYLOAD_BYTES
    assert MAX_PIPELINE_TASKS_BYTES < MAX_PREPARED_BYTES <= MAX_TEMPORAL_PAYLOAD_BYTES // 2

    req = largest_request()
    assert MAX_REQUEST_BYTES - 5_000 < temporal_bytes(req) <= MAX_REQUEST_BYTES

    # prepare_run refuses a plan past MAX_PREPARED_BYTES; the largest it lets through, all in
    # one stage, then travels to that stage with the request.
    planned = PlannedStage("s", "s", "sr-s", "t.yaml", "", {}, launch=True)
    prepared = PrepareOutput("a" * 40, "q" * 100, [planned], [], 30, 180)
    planned.task_yaml = "#" * (MAX_PREPARED_BYTES - payload_bytes(prepared))
    assert payload_bytes(prepared) == MAX_PREPARED_BYTES
    stage_input = StageInput("x" * 60, req, "a" * 40, planned, prepared.metric_patterns, 30)
    assert temporal_bytes(stage_input) < MAX_REQUEST_BYTES + MAX_PREPARED_BYTES + 1_000
    assert temporal_bytes(prepared) == MAX_PREPARED_BYTES <= MAX_TEMPORAL_PAYLOAD_BYTES // 2

    # Every progress report carries all stages' results: the largest each can be, with one
    # failed stage (a run stops at its first) and, as a bound, with all of them failed.
    one_failed = temporal_bytes(largest_report_input(failed_stages=1))
    all_failed = temporal_bytes(largest_report_input(failed_stages=MAX_STAGES))
    assert one_failed < MAX_TEMPORAL_PAYLOAD_BYTES // 2, one_failed
    assert all_failed < MAX_TEMPORAL_PAYLOAD_BYTES * 3 // 4, all_failed
    # One workflow task's commands travel in one gRPC message, capped at 4 MiB (past it the
    # server terminates the run: GrpcMessageTooLarge). The most one can hold: every stage of a
    # DAG scheduled at once (each with the request and its part of the plan), and two reports
    # (GitHub, Slack) of a progress whose stages failed at most once.
    every_stage_at_once = MAX_PREPARED_BYTES + MAX_STAGES * (MAX_REQUEST_BYTES + 1_000)
    assert every_stage_at_once + 2 * one_failed < GRPC_MESSAGE_CAP * 0.9
    # The run's result and failure details are that progress without the request.
    result = temporal_bytes(RunResult(largest_report_input(failed_stages=1).progress))
    assert result < MAX_TEMPORAL_PAYLOAD_BYTES // 2
