"""Hostile repository files end a run at once, as a failure naming the file and the limit.

The real stack: a Temporal dev server, a worker with the local backend, real git checkouts; and,
for what the user sees, the fake GitHub with the bot's webhook in front.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sky.exceptions import InvalidSkyPilotConfigError
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.worker.backends.fake_sky import FakeSky
from tests.worker.github.stack import github_stack, unique_repo
from worker import pipeline as p
from worker.activities import PLAN_TOO_LARGE, PipelineActivities
from worker.backends.skypilot import SkyPilotBackend
from worker.contract import RunProgress, RunRequest, RunState, Trigger, lane_for_branch
from worker.limits import (
    MAX_ERROR_CHARS,
    MAX_PREPARED_BYTES,
    MAX_TASK_FILE_BYTES,
    MAX_YAML_ALIAS_NODES,
)
from worker.models import PrepareInput
from worker.process import build_workers, make_backend, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings

# A pipeline ending within this long never waited on a heartbeat timeout (20 s) or a retry.
FAST_S = 15.0

BILLION_LAUGHS = (
    'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
    + "run: echo never\n"
)
ONE_STAGE = ".skyrun.yaml", "stages:\n  - {name: train, task: train.yaml}\n"


def request_for(repo: Path) -> RunRequest:
    return RunRequest(
        repo=str(repo),
        clone_url=str(repo),
        ref="main",
        trigger=Trigger.CLI,
        requested_by="tester",
        lane=lane_for_branch(str(repo), "main"),
    )


async def run_to_the_end(control: RunControl, repo: Path) -> tuple[RunProgress, float]:
    started = time.monotonic()
    outcome = await control.start(request_for(repo))
    assert outcome.started

    async def poll() -> RunProgress:
        while True:
            progress = await control.progress(outcome.run_id)
            if progress is not None and progress.state.finished:
                return progress
            await asyncio.sleep(0.1)

    progress = await asyncio.wait_for(poll(), 60)
    return progress, time.monotonic() - started


@contextmanager
def loop_stalls() -> Iterator[list[float]]:
    """The longest gaps between ticks of the event loop the worker shares with this test."""
    gaps = [0.0]

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps[0] = max(gaps[0], now - last)
            last = now

    task = asyncio.get_running_loop().create_task(tick())
    try:
        yield gaps
    finally:
        task.cancel()


def assert_failed_fast(progress: RunProgress, seconds: float) -> None:
    assert progress.state is RunState.FAILED, progress.error
    assert progress.stages == []  # nothing was planned, so nothing launched
    assert seconds < FAST_S
    assert len(progress.error) <= MAX_ERROR_CHARS + 50


async def test_a_billion_laughs_task_file_fails_at_once_naming_file_line_and_limit(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo({"train.yaml": BILLION_LAUGHS, ONE_STAGE[0]: ONE_STAGE[1]})
    progress, seconds = await run_to_the_end(control, repo)
    assert_failed_fast(progress, seconds)
    assert progress.error == (
        "train.yaml:5: " + p.E_YAML_ALIASES.format(limit=MAX_YAML_ALIAS_NODES)
    )


async def test_a_50_mb_task_file_is_refused_by_size_and_starves_nothing(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo({ONE_STAGE[0]: ONE_STAGE[1]})
    size = 50 * 1024 * 1024
    (repo / "train.yaml").write_bytes(b"run: echo hi\n" + b"#" * (size - 13))
    repo = git_repo({})  # commit it
    with loop_stalls() as gaps:
        progress, seconds = await run_to_the_end(control, repo)
    assert_failed_fast(progress, seconds)
    assert progress.error == ".skyrun.yaml:2: " + p.E_TASK_TOO_LARGE.format(
        name="'train'", task="train.yaml", size=size, limit=MAX_TASK_FILE_BYTES
    )
    # The worker's event loop (heartbeats, other runs) never waited on the file.
    assert gaps[0] < 1.0, f"the event loop stalled for {gaps[0]:.2f} s"


async def test_a_megabyte_validation_error_reaches_the_user_bounded_and_named(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    # The local backend's validation names the unknown field, all 200,000 characters of it
    # (an explicit `?` key: implicit ones stop at 1,024).
    key = "k" * 200_000
    repo = git_repo({"train.yaml": f"? {key}\n: 1\nrun: echo\n", ONE_STAGE[0]: ONE_STAGE[1]})
    progress, seconds = await run_to_the_end(control, repo)
    assert_failed_fast(progress, seconds)
    assert progress.error.startswith("stage 'train' (train.yaml): ")
    assert progress.error.endswith(" more characters left out)")


async def test_task_files_too_large_together_fail_naming_the_limit(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    body = "run: echo\n# " + "x" * (250_000 - 13) + "\n"
    stages = "".join(f"  - {{name: s{i}, task: t{i}.yaml}}\n" for i in range(4))
    files = {f"t{i}.yaml": body for i in range(4)}
    repo = git_repo({**files, ".skyrun.yaml": "stages:\n" + stages})
    progress, seconds = await run_to_the_end(control, repo)
    assert_failed_fast(progress, seconds)
    assert progress.error.startswith(".skyrun.yaml: the task files of the 4 stages to run are")


async def test_a_plan_too_large_to_travel_fails_with_what_to_change(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    # Each env fits, each task file is tiny, but every stage carries the envs: 5 times 240 kB.
    envs = "".join(f"  E{i}: {'v' * 4000}\n" for i in range(60))
    stages = "".join(f"  - {{name: s{i}, task: t.yaml}}\n" for i in range(5))
    repo = git_repo({"t.yaml": "run: echo\n", ".skyrun.yaml": f"envs:\n{envs}stages:\n{stages}"})
    progress, seconds = await run_to_the_end(control, repo)
    assert_failed_fast(progress, seconds)
    prefix = PLAN_TOO_LARGE.split("{size", 1)[0].format(count=5)
    assert progress.error.startswith(prefix)
    assert f"the limit is {MAX_PREPARED_BYTES:,}" in progress.error


async def test_the_pull_request_is_told_what_is_wrong_with_the_task_file(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with github_stack(client, make_settings, tmp_path) as stack:
        repo = unique_repo()
        stack.fake.add_repo(repo, {"train.yaml": BILLION_LAUGHS, ONE_STAGE[0]: ONE_STAGE[1]})
        pull = stack.fake.open_pull(repo, "main", user="acme")
        comment = stack.fake.add_comment(repo, pull.number, "acme", "/skyrun")
        result = await stack.command(comment)
        progress = await stack.finished(result.run_ids[0], timeout=60)

        expected = "train.yaml:5: " + p.E_YAML_ALIASES.format(limit=MAX_YAML_ALIAS_NODES)
        assert progress.state is RunState.FAILED and progress.error == expected
        (body,) = [c.body for c in stack.fake.bot_comments(repo, pull.number)]
        assert expected in body
        (check,) = stack.fake.check_runs_for(repo, result.commit)
        assert check.data["conclusion"] == "failure"
        assert expected in check.data["output"]["text"] + check.data["output"]["summary"]


@pytest.fixture
def fake_sky() -> FakeSky:
    return FakeSky()


@pytest.fixture
async def sky_control(
    client: Client, make_settings: Callable[..., Settings], fake_sky: FakeSky
) -> AsyncIterator[RunControl]:
    settings = make_settings(SKYRUN_BACKEND="skypilot")
    backend = SkyPilotBackend(sdk=fake_sky)
    async with running_workers(build_workers(client, settings, backend=backend)):
        yield RunControl(client, settings.temporal_task_queue)


async def test_the_skypilot_backend_never_sees_a_yaml_bomb(
    sky_control: RunControl, fake_sky: FakeSky, git_repo: Callable[..., Path]
) -> None:
    repo = git_repo({"train.yaml": BILLION_LAUGHS, ONE_STAGE[0]: ONE_STAGE[1]})
    progress, seconds = await run_to_the_end(sky_control, repo)
    assert_failed_fast(progress, seconds)
    assert progress.error.startswith("train.yaml:5: invalid YAML: aliases (*name) would expand")
    assert fake_sky.calls == []


async def test_a_megabyte_skypilot_error_fails_the_run_bounded_naming_the_field(
    sky_control: RunControl, fake_sky: FakeSky, git_repo: Callable[..., Path]
) -> None:
    huge = "[" + "['lol', 'lol', 'lol'], " * 200_000 + "]"
    fake_sky.request_error = InvalidSkyPilotConfigError(
        f"Invalid task YAML: {huge} is not of type 'string'. Check problematic field(s): $.run"
    )
    repo = git_repo({"train.yaml": "run: echo hi\n", ONE_STAGE[0]: ONE_STAGE[1]})
    progress, _ = await run_to_the_end(sky_control, repo)
    assert progress.state is RunState.FAILED
    assert len(progress.error) <= MAX_ERROR_CHARS
    assert progress.error.startswith(
        "stage 'train' (train.yaml): SkyPilot rejected the task: "
        "InvalidSkyPilotConfigError: field `run`: "
    )
    assert progress.error.endswith("is not of type 'string'")
    assert [s.error for s in progress.stages] == [progress.error]


async def test_a_megabyte_backend_failure_is_retried_then_fails_bounded(
    sky_control: RunControl, fake_sky: FakeSky, settings: Settings, git_repo: Callable[..., Path]
) -> None:
    fake_sky.request_error = RuntimeError("no capacity: " + "z" * 3_000_000 + " (end)")
    repo = git_repo({"train.yaml": "run: echo hi\n", ONE_STAGE[0]: ONE_STAGE[1]})
    progress, _ = await run_to_the_end(sky_control, repo)
    assert progress.state is RunState.FAILED
    assert len(progress.error) <= MAX_ERROR_CHARS
    assert progress.error.endswith("z (end)")
    assert len(fake_sky.named("launch")) == 3  # the stage's retries, each with its own error
    log = (settings.logs_dir / progress.run_id / "train.log").read_text()
    assert log.count("[skyrun] backend error: SkyPilot failed to launch cluster") == 3
    assert len(log) < 4 * MAX_ERROR_CHARS


async def test_task_files_just_inside_the_limits_run_and_starve_nothing(
    control: RunControl, git_repo: Callable[..., Path]
) -> None:
    # Three task files of 250 kB (750 kB together, under MAX_PIPELINE_TASKS_BYTES): long
    # scripts are legitimate, and checking them must not stall the worker.
    script = "".join(f"  echo line {i:06d} {'x' * 40}\n" for i in range(4_100))
    task = f"envs:\n  A: '1'\nrun: |\n{script}"
    assert 240_000 < len(task) < 250_000
    stages = "".join(f"  - {{name: s{i}, task: t{i}.yaml}}\n" for i in range(3))
    files = {f"t{i}.yaml": task for i in range(3)}
    repo = git_repo({**files, ".skyrun.yaml": "stages:\n" + stages})
    with loop_stalls() as gaps:
        progress, seconds = await run_to_the_end(control, repo)
    assert progress.state is RunState.SUCCEEDED, progress.error
    assert gaps[0] < 1.0, f"the event loop stalled for {gaps[0]:.2f} s"
    assert seconds < 60


async def test_an_unexpected_megabyte_failure_in_prepare_leaves_bounded(
    settings: Settings, git_repo: Callable[..., Path]
) -> None:
    def token_for(_request: RunRequest) -> str:
        raise RuntimeError("token service said: " + "t" * 3_000_000)

    activities = PipelineActivities(settings, make_backend(settings), token_provider=token_for)
    repo = git_repo({ONE_STAGE[0]: ONE_STAGE[1], "train.yaml": "run: echo\n"})
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(
            activities.prepare_run, PrepareInput("run-1", request_for(repo))
        )
    assert caught.value.type == "RuntimeError"  # retried, as the plain exception would be
    assert not caught.value.non_retryable
    assert caught.value.message.startswith("token service said: ttt")
    assert len(caught.value.message) <= MAX_ERROR_CHARS + 50
    assert caught.value.__cause__ is None
