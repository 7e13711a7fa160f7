"""Limits on requests and messages: every refusal names the field and the limit."""

from __future__ import annotations

import dataclasses

import pytest
from temporalio.converter import DataConverter

from worker import limits
from worker.contract import GitHubTarget, RunRequest, SlackTarget, Trigger
from worker.limits import (
    MAX_ENV_NAME_CHARS,
    MAX_ENVS,
    MAX_ERROR_CHARS,
    MAX_REF_CHARS,
    MAX_REQUEST_BYTES,
    MAX_STAGE_NAME_CHARS,
    MAX_STAGES,
    RequestTooLarge,
    bounded,
    check_request,
    cut_encoded,
    encoded_chars,
    payload_bytes,
)


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
    envs = {f"K{i}".ljust(MAX_ENV_NAME_CHARS, "_"): "v" * 800 for i in range(MAX_ENVS)}
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
    assert refusal(request(envs=envs)) == f"KEY=VALUE: {MAX_ENVS + 1} given; the limit is 64"
    long_name = "N" * (MAX_ENV_NAME_CHARS + 1)
    assert refusal(request(envs={long_name: "v"})) == (
        f"the name of env '{'N' * 40}…' is 129 characters long; the limit is 128"
    )
    assert refusal(request(stages=["a"] * (MAX_STAGES + 1))) == (
        "stages: 33 given; the limit is 32"
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
    )
    assert "s3cr3t" not in message


def test_a_megabyte_value_is_refused_fast() -> None:
    # The measured attack: `/skyrun echo A=<1 MB>` left its run queued forever.
    message = refusal(request(envs={"A": "x" * 1024 * 1024}))
    assert "the value of env 'A' is 1,048,576 characters long" in message


def test_the_total_is_measured_as_temporal_encodes_it_and_names_the_largest_part() -> None:
    # Each value fits, but astral characters take 12 bytes each once encoded as JSON.
    envs = {f"E{i}": "\U0001f600" * 400 for i in range(20)}
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
