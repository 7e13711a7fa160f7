"""Templates, their filters and the Markdown of reports."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from bot.pages.rendering import (
    STATIC_DIR,
    TEMPLATES_DIR,
    Paths,
    asset_version,
    metric_change,
    render_markdown,
    templates,
)
from bot.pages.views import RunView, build_view
from tests.bot.pages.helpers import GITHUB_REPO, diamond_progress
from worker.baseline import Baseline
from worker.contract import (
    GateResult,
    InfraCause,
    RunProgress,
    RunState,
    StageProgress,
    StageState,
    Trigger,
    Verdict,
)
from worker.formatting import format_change
from worker.links import GitHubHost, Links
from worker.settings import load_settings


def run_body(progress: RunProgress, baseline: Baseline | None = None) -> tuple[RunView, str]:
    """The run page's body for `progress`, as of 2026-01-02, and the view it was made from."""
    settings = load_settings(_env_file=None)
    view = build_view(
        progress,
        links=Links(settings),
        github=GitHubHost.of(settings),
        now=datetime(2026, 1, 2, tzinfo=UTC),
        live_tails={},
        baseline=baseline,
    )
    html = (
        templates()
        .get_template("run_body.html")
        .render(view=view, run=progress, paths=Paths(), poll_ms=2000)
    )
    return view, html


def test_markdown_reports_escape_raw_html_and_unsafe_links() -> None:
    html = render_markdown(
        "| a | b |\n| --- | ---: |\n| 1 | 2 |\n\n<script>alert(1)</script>\n\n"
        "[x](javascript:alert(1)) <img src=x onerror=alert(1)>"
    )
    assert "<table>" in html and '<td style="text-align:right">2</td>' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and 'href="javascript:' not in html


def test_metric_changes_are_written_as_on_every_other_surface() -> None:
    assert metric_change(0.82, 0.8) == format_change(0.82, 0.8) == "+0.02 (+2.5%)"
    assert metric_change(3, 3) == "±0"
    assert metric_change(1, 0) == "+1"  # no percentage of nothing
    assert metric_change(1, None) == ""


def test_paths_stay_inside_their_segment() -> None:
    paths = Paths("/ci")
    assert paths.run("a/../b?c#d") == "/ci/runs/a%2F..%2Fb%3Fc%23d"
    assert paths.log("r", "../x") == "/ci/runs/r/logs/..%2Fx"
    assert paths.runs(repo="a/b", pr=None, ref="") == "/ci/runs?repo=a%2Fb"
    assert paths.api("r 1") == "/ci/api/runs/r%201"


def test_asset_version_follows_the_static_files() -> None:
    assert len(asset_version()) == 10 and sorted(p.name for p in STATIC_DIR.iterdir())
    assert (TEMPLATES_DIR / "base.html").is_file()


def test_the_run_page_shows_changes_against_the_baseline_and_escapes_the_run() -> None:
    progress = RunProgress(
        run_id="r<1>",
        repo=GITHUB_REPO,
        ref="main",
        commit="c" * 40,
        trigger=Trigger.PUSH,
        requested_by="<b>mallory</b>",
        state=RunState.SUCCEEDED,
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:03:05+00:00",
        stages=[
            StageProgress(
                "eval", "e", StageState.SUCCEEDED, duration_s=12,
                metrics={"accuracy": 0.82, "loss": 0.5, "new": 1.0},
                report="# Results\n<iframe src=x>",
            )
        ],
    )  # fmt: skip
    _view, html = run_body(
        progress, Baseline("base<run>", "b" * 40, "main", {"accuracy": 0.8, "loss": 0.5})
    )
    assert '<div class="metric-delta up" title="was 0.8">+0.02 (+2.5%)</div>' in html
    assert '<div class="metric-delta same" title="was 0.5">±0</div>' in html
    assert html.count("metric-delta") == 2  # `new` has nothing to compare with
    assert 'href="/runs/base%3Crun%3E"' in html and "<code>bbbbbbb</code>" in html
    assert "3 min 05 s" in html and "2026-01-01 00:00:00 UTC" in html
    assert "<b>mallory</b>" not in html and "&lt;b&gt;mallory&lt;/b&gt;" in html
    assert "<h1>Results</h1>" in html and "<iframe" not in html
    assert "r<1>" not in html and "r&lt;1&gt;" in html


def test_the_run_page_lists_each_gate_and_says_when_one_failed_the_check() -> None:
    progress = RunProgress(
        run_id="r-2",
        repo=GITHUB_REPO,
        ref="main",
        commit="c" * 40,
        trigger=Trigger.PUSH,
        requested_by="alice",
        state=RunState.SUCCEEDED,
        stages=[StageProgress("eval", "e", StageState.SUCCEEDED, metrics={"accuracy": 0.81})],
        verdict=Verdict.FAILED,
        gates=[
            GateResult("accuracy >= 0.85", False, 0.81, 0.85, ""),
            GateResult("<b>x</b> <= base", True, 1, None, "no baseline"),
        ],
    )
    _view, html = run_body(progress)
    assert 'data-role="gate-failed"' in html and "accuracy 0.81 &lt; 0.85" in html
    assert 'data-verdict="failed"' in html and "gate failed</span>" in html
    assert html.count('data-passed="0"') == 1 and html.count('data-passed="1"') == 1
    assert "<td>0.81</td>" in html and "<td>0.85</td>" in html
    assert "<b>x</b>" not in html and "no baseline" in html


def test_the_run_page_says_which_stage_came_through_infrastructure_failures() -> None:
    recovered = StageProgress(
        "train",
        "t",
        StageState.SUCCEEDED,
        launched=True,
        infra_retries=1,
        infra_recovered=[InfraCause.LOST],
    )
    progress = RunProgress(
        run_id="r-3",
        repo=GITHUB_REPO,
        ref="main",
        commit="c" * 40,
        trigger=Trigger.PUSH,
        requested_by="alice",
        state=RunState.SUCCEEDED,
        stages=[StageProgress("prep", "p", StageState.SUCCEEDED, launched=True), recovered],
    )
    _view, html = run_body(progress)
    assert html.count('data-role="recovered"') == 1
    assert "recovered after preemption, 1\u00d7</span>" in html


def test_jinja_and_markdown_are_each_loaded_on_first_use_only() -> None:
    probe = (
        "import sys\n"
        "from starlette.testclient import TestClient\n"
        "from bot.app import create_app\n"
        "from worker.settings import load_settings\n"
        "app = create_app(load_settings(_env_file=None, TEMPORAL_ADDRESS='127.0.0.1:1'))\n"
        "loaded = lambda: [m for m in ('jinja2', 'markdown_it') if m in sys.modules]\n"
        "print(loaded())\n"
        "response = TestClient(app).get('/runs?pr=seven')\n"
        "print(response.status_code, 'must be a number' in response.text, loaded())\n"
        "from bot.pages.rendering import render_markdown\n"
        "print(render_markdown('*x*').strip(), loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "[]",
        "400 True ['jinja2']",
        "<p><em>x</em></p> ['jinja2', 'markdown_it']",
    ]


# --- stages as a DAG: the timeline -----------------------------------------------------------


def test_the_run_page_draws_a_timeline_bar_per_stage() -> None:
    progress = diamond_progress()
    _view, html = run_body(progress)
    assert 'data-role="flow">prep → left ∥ right → join<' in html
    assert 'class="tl-bar s-succeeded" style="left: 10.0%; width: 50.0%"' in html
    assert 'class="tl-bar s-succeeded" style="left: 10.0%; width: 25.0%"' in html
    assert html.count('class="tl-row"') == 4
    assert "needs left, right" in html


def test_the_timeline_draws_a_prelaunched_clusters_provisioning_ahead_of_its_job() -> None:
    progress = diamond_progress()
    join = progress.stages[3]
    join.provision_started_at = "2026-01-01T00:00:05+00:00"
    join.provision_finished_at = "2026-01-01T00:00:30+00:00"
    join.job_started_at = "2026-01-01T00:01:00+00:00"
    join.provision_setup_s = 15.0
    _view, html = run_body(progress)
    assert (
        'class="tl-bar tl-provision s-succeeded" data-part="provision" '
        'style="left: 5.0%; width: 15.0%" title="join: provisioning ahead of time, 15 s"'
    ) in html
    assert 'data-part="setup" style="left: 20.0%; width: 10.0%" title="join: setup, 10 s"' in html
    assert 'data-part="ready" style="left: 30.0%; width: 30.0%"' in html
    assert 'data-part="job" style="left: 60.0%; width: 40.0%"' in html
    assert "provisioning ahead" in html and 'class="tl-legend muted"' in html


def test_a_warm_cluster_links_its_run_and_one_provisioned_ahead_says_so() -> None:
    progress = diamond_progress()
    progress.stages[0].cluster_reused_from = "diamond-0"
    progress.stages[1].provision_finished_at = "2026-01-01T00:00:09+00:00"
    _view, html = run_body(progress)
    assert (
        '<span data-role="warm-from">warm from <a href="/runs/diamond-0"><span class="mono">'
        "diamond-0</span></a></span>"
    ) in html
    assert html.count('data-role="provisioned-ahead">provisioned ahead<') == 1


def test_a_queued_run_page_says_its_place_in_line_and_the_cap() -> None:
    progress = RunProgress(
        run_id="r-3",
        repo=GITHUB_REPO,
        ref="main",
        commit="c" * 40,
        trigger=Trigger.PUSH,
        requested_by="alice",
        state=RunState.QUEUED,
        stages=[StageProgress("train", "t")],
        queue_position=2,
        queue_ahead=f"{GITHUB_REPO}#41",
        queue_pool="repository",
        queue_capacity=1,
    )
    view, html = run_body(progress)
    assert 'data-role="queue" data-position="2"' in html
    assert f"2nd in line, behind {GITHUB_REPO}#41" in html
    assert f"{GITHUB_REPO} runs at most 1 at once" in html
    progress.state, progress.queue_position = RunState.RUNNING, None
    view.queue = ""
    html = templates().get_template("run_body.html").render(view=view, run=progress, paths=Paths())
    assert 'data-role="queue"' not in html
