"""`POST /github/webhook` over HTTP: every rejection, and what it starts (no worker)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from bot.github.events import R_NOT_ALLOWED
from bot.github.signature import HEADER, SHA1_HEADER, sign
from bot.github.webhook import (
    E_BAD_SIGNATURE,
    E_DELIVERY,
    E_NO_SECRET,
    E_NO_SIGNATURE,
    E_NOT_JSON,
    E_SHA1_ONLY,
    E_TOO_DEEP,
    E_TOO_LARGE,
    MAX_BODY_BYTES,
    PARSE_OFF_LOOP_BYTES,
    PATH,
    R_DUPLICATE,
)
from tests.bot.mutations import dotted, mutations
from tests.worker.github.stack import PIPELINE, SECRET, Stack, github_stack, unique_repo
from worker.commands import CommandKind
from worker.contract import RunRequest, RunState
from worker.github.contract import (
    COMMAND_WORKFLOW,
    DELIVERY_WORKFLOW,
    GitHubCommand,
    RunDelivery,
    delivery_workflow_id,
)
from worker.gitrefs import is_sha, ref_name_problem
from worker.limits import MAX_COMMAND_CHARS, MAX_COMMENT_CHARS
from worker.links import GitHubHost
from worker.settings import Settings


@pytest.fixture
async def bot(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Stack]:
    """The bot with no worker: what it starts stays queued, and is terminated afterwards."""
    async with github_stack(client, make_settings, tmp_path, worker=False) as stack:
        yield stack
        async for execution in client.list_workflows(
            f"TaskQueue = '{stack.settings.temporal_task_queue}' AND ExecutionStatus = 'Running'"
        ):
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(execution.id).terminate("test over")


def rejected(event: str) -> float:
    labels = {"event": event, "outcome": "rejected"}
    return REGISTRY.get_sample_value("skyrun_webhooks_total", labels) or 0.0


def push_body(bot: Stack) -> tuple[str, bytes]:
    repo = unique_repo()
    bot.fake.add_repo(repo, {"README.md": "hi"})
    payload = bot.fake.push_payload(repo, "refs/heads/main", bot.fake.head(repo), sender="alice")
    return repo, json.dumps(payload).encode()


async def post(bot: Stack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await bot.http.post(PATH, content=body, headers={"X-GitHub-Event": "push", **headers})


async def test_signatures_are_checked_before_anything_else(bot: Stack) -> None:
    repo, body = push_body(bot)
    before = rejected("push")
    cases = [
        ({}, E_NO_SIGNATURE),
        ({SHA1_HEADER: "sha1=" + "0" * 40}, E_SHA1_ONLY),
        ({HEADER: sign("another secret", body)}, E_BAD_SIGNATURE),
        ({HEADER: sign(SECRET, body).replace("sha256=", "sha512=")}, E_BAD_SIGNATURE),
        ({HEADER: sign(SECRET, body + b" ")}, E_BAD_SIGNATURE),
        ({HEADER: "sha256=not-hex"}, E_BAD_SIGNATURE),
    ]
    for headers, reason in cases:
        response = await post(bot, body, headers)
        assert response.status_code == 401, headers
        assert response.json() == {"outcome": "rejected", "reason": reason}
    assert await bot.control.list_runs(repo=repo) == []
    assert rejected("push") == before + len(cases)


async def test_without_a_secret_everything_is_refused(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with github_stack(
        client, make_settings, tmp_path, worker=False, GITHUB_WEBHOOK_SECRET=None
    ) as bot:
        repo, body = push_body(bot)
        for event in ("ping", "push"):
            response = await bot.http.post(
                PATH, content=body, headers={"X-GitHub-Event": event, HEADER: sign(SECRET, body)}
            )
            assert response.status_code == 401
            assert response.json()["reason"] == E_NO_SECRET
        assert await bot.control.list_runs(repo=repo) == []


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
async def test_a_malformed_body_is_a_bad_request(bot: Stack, body: bytes) -> None:
    response = await post(bot, body, {HEADER: sign(SECRET, body)})
    assert response.status_code == 400
    assert response.json()["reason"] == E_NOT_JSON


async def test_a_body_of_the_wrong_shape_is_unprocessable(bot: Stack) -> None:
    body = json.dumps({"repository": {"full_name": "acme/ml"}}).encode()
    response = await post(bot, body, {HEADER: sign(SECRET, body)})
    assert response.status_code == 422
    assert response.json()["reason"].startswith("unexpected push payload: ref: Field required")


async def test_oversize_bodies_are_refused_without_reading_them(bot: Stack) -> None:
    sent: list[int] = []

    async def chunks(total: int) -> AsyncIterator[bytes]:
        chunk = b"x" * (1024 * 1024)
        for _ in range(total):
            sent.append(len(chunk))
            yield chunk

    declared = await post(
        bot, b"", {"Content-Length": str(MAX_BODY_BYTES + 1), HEADER: sign(SECRET, b"")}
    )
    assert declared.status_code == 413
    assert declared.json()["reason"] == E_TOO_LARGE

    # No Content-Length (chunked): the read stops once past the cap, not at the end.
    streamed = await bot.http.post(
        PATH, content=chunks(100), headers={"X-GitHub-Event": "push", HEADER: "sha256=x"}
    )
    assert streamed.status_code == 413
    assert sum(sent) <= MAX_BODY_BYTES + 2 * 1024 * 1024


async def test_ping_and_unhandled_events_are_answered_with_a_reason(bot: Stack) -> None:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    for event, outcome, reason in [
        ("ping", "replied", "pong"),
        ("star", "ignored", "event star is not handled"),
    ]:
        response = await bot.http.post(
            PATH, content=body, headers={"X-GitHub-Event": event, HEADER: sign(SECRET, body)}
        )
        assert response.status_code == 200
        assert response.json() == {"outcome": outcome, "reason": reason}


async def test_repositories_not_allowed_are_ignored(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with github_stack(
        client, make_settings, tmp_path, worker=False, SKYRUN_ALLOWED_REPOS="other/*"
    ) as bot:
        repo, body = push_body(bot)
        response = await post(bot, body, {HEADER: sign(SECRET, body)})
        assert response.status_code == 200
        assert response.json() == {"outcome": "ignored", "reason": R_NOT_ALLOWED.format(repo=repo)}
        assert await bot.control.list_runs(repo=repo) == []


async def test_a_push_is_handed_to_the_worker_once_per_delivery(bot: Stack) -> None:
    repo, body = push_body(bot)
    headers = {HEADER: sign(SECRET, body), "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-1"}

    first = await post(bot, body, headers)
    again = await post(bot, body, headers)

    workflow_id = delivery_workflow_id("72d3162e-cc78-11e3-81ab-1")
    assert first.status_code == 202
    assert first.json() == {
        "outcome": "accepted",
        "run": f"{repo}#branch:main",
        "workflow_id": workflow_id,
    }
    assert again.status_code == 200
    assert again.json() == {
        "outcome": "duplicate",
        "reason": R_DUPLICATE,
        "workflow_id": workflow_id,
    }
    description = await bot.client.get_workflow_handle(workflow_id).describe()
    assert description.workflow_type == DELIVERY_WORKFLOW


async def test_without_a_delivery_id_the_body_identifies_the_delivery(bot: Stack) -> None:
    _, body = push_body(bot)
    first = await post(bot, body, {HEADER: sign(SECRET, body)})
    again = await post(bot, body, {HEADER: sign(SECRET, body)})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["workflow_id"] == again.json()["workflow_id"]


async def test_a_comment_command_is_handed_to_the_worker_once(bot: Stack) -> None:
    repo = unique_repo()
    bot.fake.add_repo(repo, {"README.md": "hi"})
    pull = bot.fake.open_pull(repo, "main", user="alice")
    payload = bot.fake.comment_payload(bot.fake.add_comment(repo, pull.number, "alice", "/skyrun"))

    first = await bot.deliver("issue_comment", payload, delivery="delivery-9")
    again = await bot.deliver("issue_comment", payload, delivery="delivery-9")

    workflow_id = delivery_workflow_id("delivery-9")
    assert first.status_code == 202
    assert first.json() == {"outcome": "accepted", "command": "run", "workflow_id": workflow_id}
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    description = await bot.client.get_workflow_handle(workflow_id).describe()
    assert description.workflow_type == COMMAND_WORKFLOW
    assert bot.fake.requests == []  # the bot never calls GitHub


async def test_merge_groups_and_check_run_actions_are_handed_to_the_worker_once(
    bot: Stack,
) -> None:
    repo = unique_repo()
    fake = bot.fake
    fake.add_repo(repo, {"README.md": "hi"})
    fake.commit(repo, {"a.txt": "1"}, branch="feature")
    group = fake.merge_group(repo, fake.open_pull(repo, "feature", user="alice"), {"a.txt": "1"})
    check = fake.add_check_run(repo, fake.head(repo), external_id="ml-0123456789")
    cases = [
        ("merge_group", fake.merge_group_payload(repo, group, sender="alice"), DELIVERY_WORKFLOW),
        (
            "check_run",
            fake.check_run_payload(check, "requested_action", sender="alice", identifier="cancel"),
            COMMAND_WORKFLOW,
        ),
        (
            "check_suite",
            fake.check_suite_payload(repo, fake.head(repo), sender="alice"),
            COMMAND_WORKFLOW,
        ),
    ]
    for number, (event, payload, workflow) in enumerate(cases):
        delivery = f"delivery-checks-{number}-{uuid.uuid4().hex[:6]}"
        first = await bot.deliver(event, payload, delivery=delivery)
        again = await bot.deliver(event, payload, delivery=delivery)

        assert first.status_code == 202, first.text
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
        handle = bot.client.get_workflow_handle(delivery_workflow_id(delivery))
        description = await handle.describe()
        assert description.workflow_type == workflow
    assert bot.fake.requests == []  # the bot never calls GitHub


# Hostile but signed bodies: a 4xx naming the problem, never a 500, a hang or a run.


async def post_event(
    bot: Stack, event: str, body: bytes, delivery: str | None = None
) -> httpx.Response:
    headers = {"X-GitHub-Event": event, HEADER: sign(SECRET, body)}
    headers["X-GitHub-Delivery"] = delivery or f"hostile-{uuid.uuid4()}"
    return await bot.http.post(PATH, content=body, headers=headers)


async def started_nothing(bot: Stack, response: httpx.Response) -> bool:
    """True when the delivery's workflow does not exist (nothing was handed to the worker)."""
    delivery = response.request.headers["X-GitHub-Delivery"]
    handle = bot.client.get_workflow_handle(delivery_workflow_id(delivery))
    try:
        await handle.describe()
    except RPCError as err:
        return err.status is RPCStatusCode.NOT_FOUND
    return False


def push_payload(bot: Stack, **changes: Any) -> tuple[str, dict[str, Any]]:
    repo = unique_repo()
    bot.fake.add_repo(repo, {"README.md": "hi"})
    payload = bot.fake.push_payload(repo, "refs/heads/main", bot.fake.head(repo), sender="alice")
    payload.update(changes)
    return repo, payload


def comment_payload(bot: Stack, body: str) -> dict[str, Any]:
    repo = unique_repo()
    bot.fake.add_repo(repo, {"README.md": "hi"})
    pull = bot.fake.open_pull(repo, "main", user="alice")
    payload = bot.fake.comment_payload(bot.fake.add_comment(repo, pull.number, "alice", "x"))
    payload["comment"]["body"] = body
    return payload


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"ref": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
    ],
)
async def test_deeply_nested_json_is_a_bad_request(bot: Stack, body: bytes) -> None:
    response = await post_event(bot, "push", body)
    assert response.status_code == 400
    assert response.json()["reason"] in (E_TOO_DEEP, E_NOT_JSON)
    assert await started_nothing(bot, response)


async def test_nesting_in_fields_skyrun_does_not_read_is_harmless(bot: Stack) -> None:
    _, payload = push_payload(bot)
    deep: Any = 1
    for _ in range(400):
        deep = {"a": [deep]}
    payload["commits"] = deep
    assert (await post_event(bot, "push", json.dumps(payload).encode())).status_code == 202


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        ("refs/heads/lone\ud800surrogate", "ref"),
        ("refs/heads/nul\u0000byte", "ref"),
        ("refs/heads/-rf", "ref"),
        ("refs/heads/a..b", "ref"),
        ("refs/heads/x.lock", "ref"),
        ("refs/heads/" + "b" * 300, "ref"),
    ],
)
async def test_a_push_of_a_bad_ref_is_refused_and_the_answer_encodes(
    bot: Stack, ref: str, field: str
) -> None:
    _, payload = push_payload(bot, ref=ref)
    response = await post_event(bot, "push", json.dumps(payload).encode())
    assert response.status_code == 422
    response.content.decode("ascii")  # an ASCII-safe answer, whatever the ref held
    reason = response.json()["reason"]
    assert reason.startswith(f"unexpected push payload: {field}: is not a valid git ref name")
    assert await started_nothing(bot, response)


@pytest.mark.parametrize("after", ["--upload-pack=touch {marker}", "HEAD", "a" * 39, "g" * 40])
async def test_a_push_of_a_bad_sha_is_refused(bot: Stack, tmp_path: Path, after: str) -> None:
    marker = tmp_path / "pwned"
    _, payload = push_payload(bot, after=after.format(marker=marker))
    response = await post_event(bot, "push", json.dumps(payload).encode())
    assert response.status_code == 422
    assert response.json()["reason"].startswith("unexpected push payload: after: the value ")
    assert await started_nothing(bot, response)
    assert not marker.exists()


async def test_a_clone_url_in_the_payload_is_never_used(
    bot: Stack, client: Client, git_repo: Callable[..., Path]
) -> None:
    local = git_repo({"f.txt": "one"})
    repo, payload = push_payload(bot)
    payload["repository"]["clone_url"] = str(local)
    response = await post_event(bot, "push", json.dumps(payload).encode())
    assert response.status_code == 202
    history = await client.get_workflow_handle(response.json()["workflow_id"]).fetch_history()
    attributes = history.events[0].workflow_execution_started_event_attributes
    [delivery] = await client.data_converter.decode(attributes.input.payloads, [RunDelivery])
    assert isinstance(delivery, RunDelivery) and delivery.request is not None
    assert delivery.request.clone_url == f"{bot.fake.url}/{repo}.git"
    assert str(local) not in json.dumps(dataclasses.asdict(delivery))


@pytest.mark.parametrize("size", [MAX_COMMENT_CHARS + 1, 70_000, 1_000_000])
async def test_comments_past_githubs_limit_are_refused_before_parsing(
    bot: Stack, size: int
) -> None:
    body = "/skyrun echo A=" + "x" * (size - len("/skyrun echo A="))
    began = time.perf_counter()
    response = await post_event(
        bot, "issue_comment", json.dumps(comment_payload(bot, body)).encode()
    )
    elapsed = time.perf_counter() - began
    assert response.status_code == 422
    reason = response.json()["reason"]
    assert reason.startswith("unexpected issue_comment payload: comment.body: the comment is")
    assert f"{size:,}" in reason and f"{MAX_COMMENT_CHARS:,}" in reason
    assert elapsed < 2
    assert await started_nothing(bot, response)
    assert (await bot.http.get("/healthz")).status_code == 200


async def test_a_long_command_within_the_comment_limit_gets_usage(bot: Stack) -> None:
    body = "/skyrun echo A=" + "x" * MAX_COMMAND_CHARS
    payload = comment_payload(bot, body)
    response = await post_event(bot, "issue_comment", json.dumps(payload).encode())
    assert response.status_code == 202
    assert response.json()["command"] == "usage"
    history = await bot.client.get_workflow_handle(response.json()["workflow_id"]).fetch_history()
    attributes = history.events[0].workflow_execution_started_event_attributes
    [command] = await bot.client.data_converter.decode(attributes.input.payloads, [GitHubCommand])
    assert isinstance(command, GitHubCommand)
    assert f"{MAX_COMMAND_CHARS:,}" in command.error and command.envs == {}
    assert len(attributes.input.payloads[0].data) < 10_000  # the long value never reaches history


async def test_the_event_loop_keeps_answering_while_a_large_body_is_parsed(bot: Stack) -> None:
    _, payload = push_payload(bot)
    payload["commits"] = [{"message": "m" * 1000, "id": str(i)} for i in range(15_000)]
    body = json.dumps(payload).encode()
    assert len(body) > PARSE_OFF_LOOP_BYTES

    async def health() -> float:
        began = time.perf_counter()
        await asyncio.sleep(0.005)
        assert (await bot.http.get("/healthz")).status_code == 200
        return time.perf_counter() - began

    response, latency = await asyncio.gather(post_event(bot, "push", body), health())
    assert response.status_code == 202
    assert latency < 0.5


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"after": 12345}, "after"),
        ({"ref": ["refs/heads/main"]}, "ref"),
        ({"deleted": "false"}, "deleted"),
        ({"installation": {"id": "9"}}, "installation.id"),
        ({"installation": {"id": 2**70}}, "installation.id"),
        ({"installation": {"id": True}}, "installation.id"),
        ({"repository": {"full_name": "../../etc/passwd"}}, "repository.full_name"),
        ({"repository": {"full_name": 7}}, "repository.full_name"),
        ({"repository": "acme/ml"}, "repository"),
        ({"sender": {"login": "../admin"}}, "sender.login"),
        ({"sender": {"login": "a\ud800"}}, "sender.login"),
    ],
)
async def test_wrong_types_name_the_field(bot: Stack, change: dict[str, Any], field: str) -> None:
    _, payload = push_payload(bot, **change)
    response = await post_event(bot, "push", json.dumps(payload).encode())
    assert response.status_code == 422
    assert response.json()["reason"].startswith(f"unexpected push payload: {field}")
    assert await started_nothing(bot, response)


@pytest.mark.parametrize("delivery", ["x" * 500, "a b", "../x", "-rf"])
async def test_a_bad_delivery_header_is_a_bad_request(bot: Stack, delivery: str) -> None:
    _, payload = push_payload(bot)
    response = await post_event(bot, "push", json.dumps(payload).encode(), delivery=delivery)
    assert response.status_code == 400
    assert response.json()["reason"] == E_DELIVERY


# Fuzzed shapes of every event type: only 2xx/4xx, the bot healthy after each, and nothing
# handed to the worker unless the delivery is valid (and then with values that are).

FUZZ_PER_EVENT = 30
ENVELOPE = (
    "repository.full_name",
    "repository.default_branch",
    "installation.id",
    "sender.login",
    "sender.type",
)
READ = {
    "push": dotted("ref", "after", "deleted", *ENVELOPE),
    "issue_comment": dotted(
        "action",
        "issue.number",
        "issue.pull_request",
        "comment.id",
        "comment.body",
        "comment.user.login",
        "comment.user.type",
        "comment.created_at",
        *ENVELOPE,
    ),
    "pull_request": dotted(
        "action",
        "number",
        "pull_request.number",
        "pull_request.user.login",
        "pull_request.head.ref",
        "pull_request.head.sha",
        "pull_request.head.repo.full_name",
        "pull_request.base.ref",
        *ENVELOPE,
    ),
    "merge_group": dotted(
        "action",
        "reason",
        "merge_group.head_sha",
        "merge_group.head_ref",
        "merge_group.base_ref",
        *ENVELOPE,
    ),
    "check_run": dotted(
        "action",
        "check_run.id",
        "check_run.name",
        "check_run.head_sha",
        "check_run.external_id",
        "check_run.pull_requests",
        "check_run.pull_requests.0.number",
        "requested_action",
        "requested_action.identifier",
        *ENVELOPE,
    ),
    "check_suite": dotted(
        "action",
        "check_suite.id",
        "check_suite.head_sha",
        "check_suite.pull_requests",
        "check_suite.pull_requests.0.number",
        *ENVELOPE,
    ),
}
"""The fields skyrun reads of each event it handles (mutated most often)."""


def event_payloads(bot: Stack) -> dict[str, dict[str, Any]]:
    repo = unique_repo()
    fake = bot.fake
    fake.add_repo(repo, {"README.md": "hi"})
    fake.install(7, repo)
    sha = fake.commit(repo, {"a.txt": "1"}, branch="feature")
    pull = fake.open_pull(repo, "feature", user="alice")
    comment = fake.add_comment(repo, pull.number, "alice", "/skyrun train EPOCHS=2")
    base = fake.push_payload(repo, "refs/heads/main", fake.head(repo), sender="alice")
    group = fake.merge_group(repo, pull, {"a.txt": "1"})
    check = fake.add_check_run(repo, sha, external_id="ml-0123456789")
    return {
        "push": base,
        "issue_comment": fake.comment_payload(comment),
        "pull_request": fake.pull_request_payload(pull, "synchronize"),
        "merge_group": fake.merge_group_payload(repo, group, sender="alice"),
        "check_run": fake.check_run_payload(
            check, "requested_action", sender="alice", identifier="rerun"
        ),
        "check_run rerequested": fake.check_run_payload(check, "rerequested", sender="alice"),
        "check_suite": fake.check_suite_payload(repo, sha, sender="alice"),
        "ping": {"zen": "Design for failure.", "hook_id": 1, "hook": {"events": ["push"]}},
    }


async def handed_over(bot: Stack, response: httpx.Response) -> RunDelivery | GitHubCommand:
    history = await bot.client.get_workflow_handle(response.json()["workflow_id"]).fetch_history()
    attributes = history.events[0].workflow_execution_started_event_attributes
    kind = RunDelivery if "run" in response.json() or "cancel" in response.json() else GitHubCommand
    [argument] = await bot.client.data_converter.decode(attributes.input.payloads, [kind])
    assert isinstance(argument, RunDelivery | GitHubCommand)
    return argument


@pytest.mark.timeout(60)
async def test_fuzzed_deliveries_of_every_event_only_get_2xx_or_4xx(
    bot: Stack, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    github = GitHubHost.from_api_url(bot.fake.url)
    statuses: dict[int, int] = {}
    began = time.monotonic()
    for seed, (name, payload) in enumerate(event_payloads(bot).items()):
        event = name.split(" ")[0]
        focus = READ.get(event, [])
        for mutated in mutations(payload, seed, FUZZ_PER_EVENT, str(marker), focus):
            body = json.dumps(mutated).encode()
            response = await post_event(bot, event, body)
            status = response.status_code
            statuses[status] = statuses.get(status, 0) + 1
            assert status < 500, (event, response.text)
            response.content.decode("ascii")
            assert (await bot.http.get("/healthz")).status_code == 200
            if status != 202:
                assert await started_nothing(bot, response), (event, response.text)
                continue
            argument = await handed_over(bot, response)
            request = argument.request if isinstance(argument, RunDelivery) else argument
            if request is None:  # a lane to cancel
                continue
            assert request.clone_url == github.clone_url(request.repo)
            if isinstance(request, RunRequest):
                assert is_sha(request.commit), request.commit
                assert ref_name_problem(request.ref) is None, request.ref
            elif request.from_check:
                assert is_sha(request.head_sha), request.head_sha
                assert request.requested_by, request  # a permission is always checked
                assert request.action in (CommandKind.RUN, CommandKind.CANCEL), request
    assert not marker.exists()
    assert statuses.get(422, 0) > FUZZ_PER_EVENT  # the mutations did reach the models
    assert time.monotonic() - began < 20


async def test_end_to_end_a_payloads_clone_url_and_an_option_as_after_execute_nothing(
    client: Client,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    git_repo: Callable[..., Path],
) -> None:
    """The attack of the issue against a real worker: a local-path clone_url in the payload and
    `after: --upload-pack=...` ran a command. Now the option is refused at the door, and a run
    with the same local clone_url is cloned from GitHub's host (the local path holds nothing)."""
    marker = tmp_path / "pwned"
    local = git_repo({"f.txt": "decoy"}, name="decoy")
    async with github_stack(client, make_settings, tmp_path) as stack:
        repo = unique_repo()
        stack.fake.add_repo(repo, PIPELINE)
        sha = stack.fake.head(repo)
        payload = stack.fake.push_payload(repo, "refs/heads/main", sha, sender="alice")
        payload["repository"]["clone_url"] = str(local)

        hostile = {**payload, "after": f"--upload-pack=touch {marker}"}
        refused = await stack.deliver("push", hostile)
        assert refused.status_code == 422 and "after" in refused.json()["reason"]

        dispatched = await stack.dispatched(await stack.deliver("push", payload))
        progress = await stack.finished(dispatched.run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    assert progress.commit == sha
    assert not marker.exists()
