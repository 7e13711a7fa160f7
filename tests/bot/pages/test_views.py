"""Views and JSON built from a run's progress, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.pages.views import (
    RunView,
    build_row,
    build_view,
    progress_from_summary,
    repo_name,
    row_json,
    view_json,
)
from tests.bot.pages.helpers import GITHUB_REPO, diamond_progress
from worker.baseline import Baseline
from worker.contract import (
    GateResult,
    RunProgress,
    RunState,
    StageProgress,
    StageState,
    Trigger,
    Verdict,
)
from worker.links import GitHubHost, Links
from worker.runcontrol import RunSummary
from worker.settings import load_settings

NOW = datetime(2026, 1, 1, 0, 1, 10, tzinfo=UTC)
# What DESIGN.md says scripts rely on in GET /api/runs/{run_id}.
API_FIELDS = {
    "run_id",
    "repo",
    "ref",
    "commit",
    "trigger",
    "state",
    "baseline",
    "metrics",
    "verdict",
    "gates",
    "stages",
}
GATE_FIELDS = {"expr", "passed", "value", "threshold", "note"}
STAGE_FIELDS = {"name", "state", "cluster", "started_at", "finished_at", "exit_code", "metrics"}


def live_progress() -> RunProgress:
    return RunProgress(
        run_id="r-1",
        repo=GITHUB_REPO,
        ref="main",
        commit="a" * 40,
        trigger=Trigger.COMMENT,
        requested_by="alice",
        state=RunState.RUNNING,
        started_at="2026-01-01T00:00:00+00:00",
        pr_number=12,
        stages=[
            StageProgress(
                "prep", "prep", StageState.SUCCEEDED, duration_s=4.0, log_tail=["done"],
                metrics={"accuracy": 0.5, "loss": 2.0},
            ),
            StageProgress(
                "train", "gpu", StageState.RUNNING, started_at="2026-01-01T00:00:10+00:00",
                metrics={"accuracy": 0.8},
            ),
        ],
    )  # fmt: skip


def summary(**fields: object) -> RunSummary:
    values: dict[str, object] = {
        "run_id": "r-2",
        "repo": "/srv/repos/thing",
        "ref": "",
        "commit": "",
        "trigger": "slack",
        "requested_by": "U1",
        "state": RunState.QUEUED,
        "pr_number": None,
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "finished_at": None,
    }
    values.update(fields)
    return RunSummary(**values)  # type: ignore[arg-type]


def test_view_of_a_live_stage_uses_the_log_store_tail_and_the_elapsed_time() -> None:
    settings = load_settings(_env_file=None, GITHUB_API_URL="https://ghe.example.com/api/v3")
    view = build_view(
        live_progress(),
        links=Links(settings),
        github=GitHubHost.of(settings),
        now=NOW,
        live_tails={"train": ["epoch 3"]},
    )
    assert view.live and view.trigger == "PR comment" and view.duration_s == 70
    assert [(s.tail, s.duration_s, s.live) for s in view.stages] == [
        (["done"], 4.0, False),
        (["epoch 3"], 60, True),
    ]
    assert view.links.commit == f"https://ghe.example.com/{GITHUB_REPO}/commit/{'a' * 40}"
    assert view.links.pr == f"https://ghe.example.com/{GITHUB_REPO}/pull/12"
    assert view.links.ref == f"https://ghe.example.com/{GITHUB_REPO}/tree/main"
    # Later stages' values first, and no change without a baseline.
    assert [(m.name, m.value, m.delta) for m in view.metrics] == [
        ("accuracy", 0.8, None),
        ("loss", 2.0, None),
    ]


def test_links_on_ghe_com_point_at_its_web_host_not_its_api_host() -> None:
    settings = load_settings(_env_file=None, GITHUB_API_URL="https://api.acme.ghe.com")
    view = build_view(
        live_progress(),
        links=Links(settings),
        github=GitHubHost.of(settings),
        now=NOW,
        live_tails={},
    )
    assert view.links.repo == f"https://acme.ghe.com/{GITHUB_REPO}"
    assert view.links.pr == f"https://acme.ghe.com/{GITHUB_REPO}/pull/12"


def test_hostile_refs_and_commits_stay_inside_their_link() -> None:
    progress = live_progress()
    progress.ref, progress.commit = "feature/x?y#z", "../../evil"
    settings = load_settings(_env_file=None)
    view = build_view(
        progress, links=Links(settings), github=GitHubHost.of(settings), now=NOW, live_tails={}
    )
    assert view.links.ref == f"https://github.com/{GITHUB_REPO}/tree/feature/x%3Fy%23z"
    assert view.links.commit == f"https://github.com/{GITHUB_REPO}/commit/..%2F..%2Fevil"
    assert "?" not in view.links.ref and "#" not in view.links.ref
    for repo in ("../etc", "a/..", "a/b/c", "https://evil.example/a/b", "-x/y"):
        progress.repo = repo
        links = build_view(
            progress, links=Links(settings), github=GitHubHost.of(settings), now=NOW, live_tails={}
        ).links
        assert links.repo == links.commit == links.pr == links.ref == "", repo


def test_a_local_repo_gets_no_forge_links_and_a_stand_in_from_visibility() -> None:
    progress = progress_from_summary(summary())
    assert progress.trigger is Trigger.SLACK and progress.stages == []
    assert progress.started_at == "2026-01-01T00:00:00+00:00" and progress.finished_at == ""
    view = build_view(
        progress,
        links=Links(load_settings(_env_file=None)),
        github=GitHubHost.from_api_url("https://api.github.com"),
        now=datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),
        live_tails={},
    )
    assert view.links.commit == view.links.repo == view.links.pr == ""
    assert view.trigger == "Slack" and view.duration_s == 5
    # A trigger this version does not know is shown as the CLI's rather than breaking the page.
    assert progress_from_summary(summary(trigger="carrier-pigeon")).trigger is Trigger.CLI


def test_repo_names_are_short_and_never_empty() -> None:
    assert repo_name("acme/mock-training") == "acme/mock-training"
    assert repo_name("https://git.example.com/team/thing.git") == "thing"
    assert repo_name("/srv/repos/thing/") == "thing"
    assert repo_name("/") == "/"


def test_json_keeps_the_fields_scripts_rely_on_and_the_baselines_changes() -> None:
    settings = load_settings(_env_file=None, SKYRUN_PUBLIC_URL="https://ci.example.com")
    progress = live_progress()
    baseline = Baseline("base-run", "b" * 40, "main", {"accuracy": 0.75, "other": 1.0})
    view = build_view(
        progress,
        links=Links(settings),
        github=GitHubHost.of(settings),
        now=NOW,
        live_tails={},
        baseline=baseline,
    )
    data = view_json(view, Links(settings))
    assert set(data) >= API_FIELDS and data["trigger"] == "comment" and data["state"] == "running"
    assert all(set(stage) >= STAGE_FIELDS for stage in data["stages"])
    assert data["metrics"] == {"accuracy": 0.8, "loss": 2.0}
    assert data["baseline"]["run_id"] == "base-run" and data["baseline"]["commit"] == "b" * 40
    assert data["baseline"]["url"] == "https://ci.example.com/runs/base-run"
    # Only metrics both runs have get a change; the baseline's others are listed, not compared.
    assert data["baseline"]["deltas"] == {"accuracy": 0.8 - 0.75}
    assert data["stages"][1]["log_url"] == "https://ci.example.com/runs/r-1/logs/train"
    assert data["stages"][1]["elapsed_s"] == 60 and data["duration_s"] == 70
    view.baseline = None
    assert view_json(view, Links(settings))["baseline"] is None


def test_a_row_takes_the_answered_commit_and_metrics_and_otherwise_visibilitys() -> None:
    settings = load_settings(_env_file=None)
    finished = summary(
        repo=GITHUB_REPO,
        state=RunState.SUCCEEDED,
        trigger="push",
        finished_at=datetime(2026, 1, 1, 0, 2, tzinfo=UTC),
    )
    silent = build_row(finished, None, NOW)
    assert (silent.metrics, silent.commit, silent.live, silent.duration_s) == (None, "", False, 120)
    answered = build_row(finished, live_progress(), NOW)
    assert answered.commit == "a" * 40 and answered.headline == [("accuracy", 0.8), ("loss", 2.0)]
    data = row_json(answered, Links(settings))
    assert data["started_at"] == "2026-01-01T00:00:00+00:00" and data["trigger_label"] == "push"
    assert data["url"] == "http://localhost:8000/runs/r-2" and data["state"] == "succeeded"


def test_the_gates_verdict_is_in_the_view_and_the_json_apart_from_the_state() -> None:
    settings = load_settings(_env_file=None)
    progress = live_progress()
    progress.state = RunState.SUCCEEDED
    progress.verdict = Verdict.FAILED
    progress.gates = [
        GateResult("accuracy >= 0.9", False, 0.8, 0.9, ""),
        GateResult("loss <= base", True, 2.0, None, "no baseline"),
    ]
    view = build_view(
        progress, links=Links(settings), github=GitHubHost.of(settings), now=NOW, live_tails={}
    )
    assert view.verdict == "gate failed" and view.gate_failed == "accuracy 0.8 < 0.9"
    data = view_json(view, Links(settings))
    assert data["state"] == "succeeded" and data["verdict"] == "failed"
    assert all(set(gate) >= GATE_FIELDS for gate in data["gates"])
    assert data["gates"][1] == {
        "expr": "loss <= base",
        "passed": True,
        "value": 2.0,
        "threshold": None,
        "note": "no baseline",
    }
    # A failed stage decides the run; its gates were never checked.
    plain = build_view(
        live_progress(), links=Links(settings), github=GitHubHost.of(settings), now=NOW,
        live_tails={},
    )  # fmt: skip
    assert plain.verdict == "" and plain.gate_failed == ""
    assert view_json(plain, Links(settings))["verdict"] == "none"


# Retry from the failed stage: the page and the JSON say what was reused and what ran again.


def retry_progress() -> RunProgress:
    return RunProgress(
        run_id="w-1-retry",
        repo=GITHUB_REPO,
        ref="main",
        commit="a" * 40,
        trigger=Trigger.CLI,
        requested_by="alice",
        state=RunState.SUCCEEDED,
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:01:00+00:00",
        retry_of="w-1",
        stages=[
            StageProgress(
                "prep", "prep", StageState.SUCCEEDED, metrics={"rows": 3.0}, reused_from="w-1"
            ),
            StageProgress(
                "eval",
                "eval",
                StageState.SUCCEEDED,
                rerun_reason="it failed",
                started_at="2026-01-01T00:00:10+00:00",
            ),
        ],
    )


def test_a_retry_s_json_names_the_run_retried_and_each_reused_stage() -> None:
    from bot.pages.rendering import Paths, templates

    settings = load_settings(_env_file=None)
    links = Links(settings)
    progress = retry_progress()
    view = build_view(progress, links=links, github=GitHubHost.of(settings), now=NOW, live_tails={})
    data = view_json(view, links)
    assert data["retry_of"] == "w-1"
    prep, evaluate = data["stages"]
    assert prep["reused_from"] == "w-1" and prep["metrics"] == {"rows": 3.0}
    assert prep["log_url"] == links.log("w-1", "prep")
    assert evaluate["reused_from"] is None and evaluate["rerun_reason"] == "it failed"
    assert evaluate["log_url"] == links.log("w-1-retry", "eval")
    plain = view_json(build_view(live_progress(), links=links, github=GitHubHost.of(settings),
                                 now=NOW, live_tails={}), links)  # fmt: skip
    assert plain["retry_of"] is None and plain["stages"][0]["reused_from"] is None

    html = (
        templates()
        .get_template("run_body.html")
        .render(view=view, run=progress, paths=Paths(), poll_ms=2000)
    )
    assert '<dt>Retry of</dt><dd><a href="/runs/w-1">' in html
    assert 'data-role="reused-from">reused from <a href="/runs/w-1">' in html
    assert 'href="/runs/w-1/logs/prep">full log</a>' in html
    assert 'href="/runs/w-1-retry/logs/eval">full log</a>' in html
    assert 'data-role="rerun-reason">runs again: it failed</div>' in html


# --- stages as a DAG: needs and the timeline ------------------------------------------------


def diamond_view(progress: RunProgress, now: datetime = NOW) -> RunView:
    settings = load_settings(_env_file=None)
    return build_view(
        progress, links=Links(settings), github=GitHubHost.of(settings), now=now, live_tails={}
    )


def test_the_timeline_places_each_stage_by_its_start_and_end_over_the_run() -> None:
    view = diamond_view(diamond_progress())
    bars = {bar.name: (bar.left, bar.width) for bar in view.timeline}
    assert bars == {
        "prep": (0, 10),
        "left": (10, 50),
        "right": (10, 25),
        "join": (60, 40),
    }
    assert view.flow == "prep → left ∥ right → join"
    assert [bar.needs for bar in view.timeline] == [[], ["prep"], ["prep"], ["left", "right"]]


def test_a_running_stage_grows_to_now_and_stages_not_started_have_no_bar() -> None:
    progress = diamond_progress(RunState.RUNNING)
    progress.finished_at = ""
    left, _, join = progress.stages[1], progress.stages[2], progress.stages[3]
    left.state, left.finished_at, left.duration_s = StageState.RUNNING, "", None
    join.state, join.started_at, join.finished_at = StageState.PENDING, "", ""
    view = diamond_view(progress, now=datetime(2026, 1, 1, 0, 0, 50, tzinfo=UTC))
    bars = {bar.name: bar for bar in view.timeline}
    assert set(bars) == {"prep", "left", "right"}
    assert (bars["left"].left, bars["left"].width, bars["left"].running) == (20, 80, True)
    assert (bars["prep"].left, bars["prep"].width) == (0, 20)


def test_a_prelaunched_stages_bar_shows_provisioning_setup_waiting_and_its_job() -> None:
    progress = diamond_progress()
    join = progress.stages[3]
    # Provisioned from 5 to 30 s while prep and the middle stages ran, its setup from 20 s;
    # its job 60 to 100 s.
    join.provision_started_at = "2026-01-01T00:00:05+00:00"
    join.provision_finished_at = "2026-01-01T00:00:30+00:00"
    join.provision_setup_s = 15.0
    join.job_started_at = "2026-01-01T00:01:00+00:00"
    # prep launched in its own step: 4 s before its job, its setup from 1 s; right launched
    # with SkyPilot, which does not say when the setup inside its launch began.
    progress.stages[0].launch_s, progress.stages[0].setup_s = 4.0, 1.0
    progress.stages[2].launch_s = 5.0
    bars = {bar.name: bar for bar in diamond_view(progress).timeline}
    assert (bars["join"].left, bars["join"].width) == (5, 95)
    assert [(p.kind, p.left, p.width, p.seconds) for p in bars["join"].parts] == [
        ("provision", 5, 15, 15.0),
        ("setup", 20, 10, 10.0),
        ("ready", 30, 30, 30.0),
        ("job", 60, 40, 40.0),
    ]
    assert [(p.kind, p.left, p.width) for p in bars["prep"].parts] == [
        ("launch", 0, 1),
        ("setup", 1, 3),
        ("job", 4, 6),
    ]
    assert [(p.kind, p.left, p.width) for p in bars["right"].parts] == [
        ("launch", 10, 5),
        ("job", 15, 20),
    ]
    assert bars["left"].parts == []  # no launch time known: one bar


def test_a_stage_still_waiting_for_its_needs_shows_its_cluster_provisioning() -> None:
    progress = diamond_progress(RunState.RUNNING)
    progress.finished_at = ""
    join = progress.stages[3]
    join.state, join.started_at, join.finished_at, join.duration_s = (
        StageState.PENDING,
        "",
        "",
        None,
    )
    join.provision_started_at = "2026-01-01T00:00:05+00:00"
    view = diamond_view(progress, now=datetime(2026, 1, 1, 0, 1, 40, tzinfo=UTC))
    bar = next(bar for bar in view.timeline if bar.name == "join")
    assert bar.running and (bar.left, bar.state) == (5, "pending")
    assert bar.parts == []  # provisioning alone is the whole bar so far


def test_a_sequential_run_has_a_timeline_but_no_flow_and_old_runs_read_as_a_chain() -> None:
    progress = diamond_progress()
    for stage in progress.stages:
        stage.needs = None  # a run from before `needs:`
    view = diamond_view(progress)
    assert view.flow == ""
    assert len(view.timeline) == 4
    stages = view_json(view, Links(load_settings(_env_file=None)))["stages"]
    assert [s["needs"] for s in stages] == [[], ["prep"], ["left"], ["right"]]


def test_the_api_says_which_warm_clusters_stages_ran_on_or_null() -> None:
    progress = diamond_progress()
    progress.stages[1].cluster_reused_from = "diamond-0"
    stages = view_json(diamond_view(progress), Links(load_settings(_env_file=None)))["stages"]
    assert [s["cluster_reused_from"] for s in stages] == [None, "diamond-0", None, None]


def test_the_api_lists_each_stages_needs() -> None:
    view = diamond_view(diamond_progress())
    stages = view_json(view, Links(load_settings(_env_file=None)))["stages"]
    assert {s["name"]: s["needs"] for s in stages} == {
        "prep": [],
        "left": ["prep"],
        "right": ["prep"],
        "join": ["left", "right"],
    }


def test_a_queued_runs_json_has_its_place_in_line_and_a_running_one_null() -> None:
    settings = load_settings(_env_file=None)
    progress = live_progress()
    progress.state, progress.stages = RunState.QUEUED, []
    progress.queue_position, progress.queue_ahead = 3, "acme/widgets#7"
    progress.queue_pool, progress.queue_capacity = "deployment", 4
    view = build_view(
        progress, links=Links(settings), github=GitHubHost.of(settings), now=NOW, live_tails={}
    )
    assert view.queue.startswith("⏳ Queued: 3rd in line, behind acme/widgets#7.")
    data = view_json(view, Links(settings))
    assert data["state"] == "queued" and data["queue_position"] == 3
    assert data["queue_ahead"] == "acme/widgets#7"
    running = build_view(
        live_progress(), links=Links(settings), github=GitHubHost.of(settings), now=NOW,
        live_tails={},
    )  # fmt: skip
    assert running.queue == "" and view_json(running, Links(settings))["queue_position"] is None
