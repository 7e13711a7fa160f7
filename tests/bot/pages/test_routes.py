"""The pages' routes on real runs: HTML, fragments, JSON, errors, turned off, no secrets."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from markupsafe import escape
from temporalio.client import Client

from bot.pages.routes import LIST_POLL_MS, RUN_POLL_MS
from bot.pages.texts import BAD_PR, PAGES_OFF, UNKNOWN_LOG, UNKNOWN_RUN
from tests.bot.pages.helpers import (
    ANSI,
    FAILING_PIPELINE,
    GITHUB_REPO,
    Stack,
    bot_only,
    bot_stack,
    gated_files,
    github_request,
    wait_for,
)
from tests.runs import request_for, wait_finished, wait_stage_running
from worker.contract import RunState
from worker.formatting import format_change
from worker.process import build_workers, running_workers
from worker.runcontrol import RunControl
from worker.settings import Settings


async def test_finished_run_page_json_list_logs_and_change_against_the_branch(
    stack: Stack, git_repo: Callable[..., Path], example_files: dict[str, str]
) -> None:
    repo = git_repo(example_files)
    earlier = await stack.control.start(github_request(repo, envs={"NUM_EPOCHS": "1"}))
    base = await wait_finished(stack.control, earlier.run_id)
    assert base.state is RunState.SUCCEEDED, base.error
    outcome = await stack.control.start(github_request(repo))
    progress = await wait_finished(stack.control, outcome.run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error
    run_id, commit = outcome.run_id, progress.commit

    page = await stack.http.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert 'data-live="0"' in html and 'data-state="succeeded"' in html
    assert f'data-poll-ms="{RUN_POLL_MS}"' in html
    for stage in ("preprocess", "train", "eval"):
        assert f'data-stage="{stage}" data-state="succeeded"' in html
        assert f'href="/runs/{run_id}/logs/{stage}"' in html
    assert f'href="https://github.com/{GITHUB_REPO}/commit/{commit}"' in html
    assert f'href="http://localhost:8233/namespaces/default/workflows/{run_id}"' in html
    assert "PR comment" not in html and "push" in html and "alice" in html
    assert "<table>" in html and "<td>test</td>" in html  # the eval report, as HTML
    accuracy = progress.metrics["accuracy"]
    assert f'<div class="metric-value">{accuracy:.4g}</div>' in html
    # Compared with the earlier good run of the branch, which trained for one epoch only, and
    # written as the PR comment and Slack write it.
    assert f'href="/runs/{earlier.run_id}"' in html
    change = format_change(accuracy, base.metrics["accuracy"])
    assert f'title="was {base.metrics["accuracy"]:.4g}">{change}</div>' in html

    api = (await stack.http.get(f"/api/runs/{run_id}")).json()
    assert api["state"] == "succeeded" and api["live"] is False
    assert [s["state"] for s in api["stages"]] == ["succeeded"] * 3
    assert api["metrics"]["accuracy"] == accuracy
    assert api["links"]["commit"] == f"https://github.com/{GITHUB_REPO}/commit/{commit}"
    assert api["stages"][1]["log_url"] == f"http://skyrun.test/runs/{run_id}/logs/train"
    assert api["baseline"]["run_id"] == earlier.run_id
    assert api["baseline"]["commit"] == base.commit
    delta = accuracy - base.metrics["accuracy"]
    assert api["baseline"]["deltas"]["accuracy"] == pytest.approx(delta)
    # The earlier run is the first of its branch: it has nothing to compare with.
    assert (await stack.http.get(f"/api/runs/{earlier.run_id}")).json()["baseline"] is None

    listed = (await stack.http.get("/api/runs", params={"repo": GITHUB_REPO})).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id, earlier.run_id]  # newest first
    assert listed[0]["metrics"]["accuracy"] == accuracy and listed[0]["trigger_label"] == "push"
    assert listed[0]["commit"] == commit and listed[0]["duration_s"] > 0
    for params, expected in (
        ({"state": "succeeded", "trigger": "push"}, 2),
        ({"state": "failed"}, 0),
        ({"trigger": "slack"}, 0),
        ({"ref": "main", "repo": GITHUB_REPO}, 2),
        ({"ref": "other"}, 0),
    ):
        found = (await stack.http.get("/api/runs", params=params)).json()["runs"]
        assert len(found) == expected, params
    runs_page = (await stack.http.get("/runs", params={"state": "succeeded"})).text
    assert f'href="/runs/{run_id}"' in runs_page and "accuracy" in runs_page
    assert '<option value="succeeded" selected>' in runs_page
    assert f'data-poll-ms="{LIST_POLL_MS}"' in runs_page

    log = await stack.http.get(f"/runs/{run_id}/logs/train")
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    assert "epoch 20/20" in log.text and ANSI not in log.text


async def test_runs_of_another_deployment_are_neither_listed_nor_a_baseline(
    client: Client,
    make_settings: Callable[..., Settings],
    git_repo: Callable[..., Path],
    example_files: dict[str, str],
) -> None:
    repo = git_repo(example_files)
    ours, theirs = make_settings(), make_settings(TEMPORAL_TASK_QUEUE=f"other-{id(repo)}")
    async with running_workers(build_workers(client, theirs)):
        other = RunControl(client, theirs.temporal_task_queue)
        # Its own lane: a lane coordinator is one workflow per namespace, on the queue that
        # started it first (worker/coordinator.py), so the lanes of two deployments must differ.
        foreign_request = github_request(repo, envs={"NUM_EPOCHS": "1"}, lane="foreign")
        foreign = await other.start(foreign_request)
        assert (await wait_finished(other, foreign.run_id)).state is RunState.SUCCEEDED
    async with bot_stack(client, ours) as stack:
        outcome = await stack.control.start(github_request(repo))
        assert (await wait_finished(stack.control, outcome.run_id)).state is RunState.SUCCEEDED
        listed = (await stack.http.get("/api/runs")).json()["runs"]
        assert [r["run_id"] for r in listed] == [outcome.run_id]
        assert (await stack.http.get(f"/api/runs/{outcome.run_id}")).json()["baseline"] is None


async def test_failed_run_page_names_the_stage_and_shows_its_last_lines(
    stack: Stack, git_repo: Callable[..., Path]
) -> None:
    outcome = await stack.control.start(request_for(git_repo(FAILING_PIPELINE)))
    progress = await wait_finished(stack.control, outcome.run_id)
    assert progress.state is RunState.FAILED

    html = (await stack.http.get(f"/runs/{outcome.run_id}")).text
    assert "Run failed:</strong> stage &#39;b&#39; failed with exit status 3" in html
    assert 'data-stage="b" data-state="failed"' in html
    assert 'data-stage="c" data-state="skipped"' in html
    assert re.search(r'<details class="tail" data-key="tail-b" open>', html)
    assert "Traceback: boom" in html and "exit 3" in html

    api = (await stack.http.get(f"/api/runs/{outcome.run_id}")).json()
    assert api["state"] == "failed" and api["error"] == progress.error
    assert any("Traceback: boom" in line for line in api["stages"][1]["log_tail"])
    listed = (await stack.http.get("/api/runs", params={"state": "failed"})).json()["runs"]
    assert [(r["run_id"], r["error"]) for r in listed] == [(outcome.run_id, progress.error)]

    assert "Traceback: boom" in (await stack.http.get(f"/runs/{outcome.run_id}/logs/b")).text
    never = await stack.http.get(f"/runs/{outcome.run_id}/logs/c")
    assert never.status_code == 404
    assert never.text == UNKNOWN_LOG.format(stage="c", run_id=outcome.run_id)


async def test_live_run_page_fragment_and_json_follow_the_running_stage(
    gate: Path, stack: Stack, git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    outcome = await stack.control.start(request_for(git_repo(gated_files(gate))))
    run_id = outcome.run_id
    try:
        await wait_stage_running(stack.control, run_id, "train")
        log = stack.settings.logs_dir / run_id / "train.log"
        await wait_for(lambda: log.exists() and "epoch 1" in log.read_text())

        page = (await stack.http.get(f"/runs/{run_id}")).text
        assert 'data-live="1"' in page and 'data-state="running"' in page
        assert f'data-live-src="/runs/{run_id}?fragment=1"' in page
        assert 'data-stage="train" data-state="running"' in page
        assert 'data-stage="prep" data-state="succeeded"' in page
        assert "waiting for the gate" in page and "epoch 1" in page and ANSI not in page
        assert "Clusters up" in page

        fragment = await stack.http.get(f"/runs/{run_id}", params={"fragment": "1"})
        assert fragment.text.lstrip().startswith("<article") and "<html" not in fragment.text
        assert 'data-stage="train" data-state="running"' in fragment.text

        api = (await stack.http.get(f"/api/runs/{run_id}")).json()
        assert api["live"] is True and api["state"] == "running"
        train = api["stages"][1]
        assert train["state"] == "running" and train["elapsed_s"] >= 0
        assert any("waiting for the gate" in line for line in train["log_tail"])
        assert api["clusters_up"] != []
        listed = (await stack.http.get("/api/runs", params={"state": "running"})).json()["runs"]
        assert [r["run_id"] for r in listed] == [run_id] and listed[0]["live"] is True
        runs_page = (await stack.http.get("/runs")).text
        assert 'data-live-src="/runs?fragment=1"' in runs_page
        rows = (await stack.http.get("/runs", params={"fragment": "1", "state": "running"})).text
        assert rows.lstrip().startswith('<section class="runs" data-live="1">')
    finally:
        gate.touch()
    progress = await wait_finished(stack.control, run_id)
    assert progress.state is RunState.SUCCEEDED, progress.error

    page = (await stack.http.get(f"/runs/{run_id}")).text
    assert 'data-live="0"' in page and 'data-stage="train" data-state="succeeded"' in page
    assert "<table>" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page


async def test_unknown_run_is_a_404_page_and_a_json_404(stack: Stack) -> None:
    page = await stack.http.get("/runs/no-such-run")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert UNKNOWN_RUN.format(run_id="no-such-run") in page.text
    api = await stack.http.get("/api/runs/no-such-run")
    assert api.status_code == 404
    assert api.json() == {"error": UNKNOWN_RUN.format(run_id="no-such-run")}
    assert (await stack.http.get("/runs/no-such-run/logs/train")).status_code == 404
    assert (await stack.http.get("/runs/x/logs/..%2F..%2Fetc")).status_code == 404
    bad = await stack.http.get("/api/runs", params={"state": "sleeping"})
    assert bad.status_code == 400 and "unknown state 'sleeping'" in bad.json()["error"]
    bad_page = await stack.http.get("/runs", params={"pr": "seven"})
    assert bad_page.status_code == 400 and escape(BAD_PR.format(value="seven")) in bad_page.text
    superscript = await stack.http.get("/api/runs", params={"pr": "²"})
    assert superscript.status_code == 400
    empty = await stack.http.get("/runs")
    assert "No runs yet" in empty.text
    static = await stack.http.get("/static/skyrun.css")
    assert static.status_code == 200 and static.headers["content-type"].startswith("text/css")


async def test_no_secret_reaches_a_page(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    secrets = {
        "GITHUB_WEBHOOK_SECRET": "whsec-do-not-show",
        "GITHUB_TOKEN": "ghp_do_not_show_1234",
        "SLACK_BOT_TOKEN": "xoxb-do-not-show",
        "SLACK_SIGNING_SECRET": "slack-signing-do-not-show",
        "GITHUB_API_URL": "https://user:ghp_in_url_do_not_show@ghe.example.com/api/v3",
    }
    settings = make_settings(**secrets)
    async with bot_stack(client, settings) as running:
        outcome = await running.control.start(request_for(git_repo(FAILING_PIPELINE)))
        await wait_finished(running.control, outcome.run_id)
        bodies = [
            (await running.http.get(path)).text
            for path in (
                "/runs",
                "/api/runs",
                f"/runs/{outcome.run_id}",
                f"/runs/{outcome.run_id}?fragment=1",
                f"/api/runs/{outcome.run_id}",
                f"/runs/{outcome.run_id}/logs/b",
                "/metrics",
            )
        ]
    for body in bodies:
        for value in secrets.values():
            assert "do_not_show" not in body and "do-not-show" not in body, value


async def test_pages_mask_the_bots_secrets_where_the_worker_did_not_know_them(
    client: Client, make_settings: Callable[..., Settings], git_repo: Callable[..., Path]
) -> None:
    secret = "only-the-bot-knows-this-secret"
    worker_settings = make_settings()
    bot_settings = make_settings(GITHUB_WEBHOOK_SECRET=secret)
    files = {
        "a.yaml": 'run: |\n  echo "leak $LEAK"\n  echo ::report\n  echo "r $LEAK"\n  exit 3\n',
        ".skyrun.yaml": "stages:\n  - {name: a, task: a.yaml}\n",
    }
    async with (
        running_workers(build_workers(client, worker_settings)),
        bot_only(client, bot_settings) as stack,
    ):
        outcome = await stack.control.start(request_for(git_repo(files), envs={"LEAK": secret}))
        progress = await wait_finished(stack.control, outcome.run_id)
        assert progress.state is RunState.FAILED
        assert any(secret in line for line in progress.stages[0].log_tail), "the worker let it by"
        bodies = [
            (await stack.http.get(path)).text
            for path in (
                f"/runs/{outcome.run_id}",
                f"/api/runs/{outcome.run_id}",
                f"/runs/{outcome.run_id}/logs/a",
                "/api/runs",
            )
        ]
    assert "leak ***" in bodies[0] and "leak ***" in bodies[1] and "leak ***" in bodies[2]
    for body in bodies:
        assert secret not in body


async def test_run_pages_can_be_turned_off(
    client: Client, make_settings: Callable[..., Settings]
) -> None:
    async with bot_only(client, make_settings(SKYRUN_RUN_PAGES="false")) as running:
        for path in ("/runs", "/runs/x", "/runs/x/logs/y", "/static/skyrun.css"):
            response = await running.http.get(path)
            expected = (404, PAGES_OFF) if not path.startswith("/static") else (404, "Not Found")
            assert (response.status_code, response.text) == expected, path
        api = await running.http.get("/api/runs")
        assert api.status_code == 404 and api.json() == {"error": PAGES_OFF}
        assert (await running.http.get("/healthz")).status_code == 200


async def test_without_temporal_pages_say_so_and_logs_are_still_served(
    settings: Settings,
) -> None:
    unreachable = await Client.connect("127.0.0.1:1", lazy=True)
    log = settings.logs_dir / "some-run" / "train.log"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1\nepoch 2\n")
    async with bot_only(unreachable, settings) as stack:
        for path in ("/runs", "/runs/some-run"):
            page = await stack.http.get(path)
            assert page.status_code == 503 and "Temporal is not reachable" in page.text
        api = await stack.http.get("/api/runs/some-run")
        assert api.status_code == 503 and "Check TEMPORAL_ADDRESS" in api.json()["error"]
        listed = await stack.http.get("/api/runs")
        assert listed.status_code == 503 and "skyrun check" in listed.json()["error"]
        served_log = await stack.http.get("/runs/some-run/logs/train")
        assert (served_log.status_code, served_log.text) == (200, "epoch 1\nepoch 2\n")
