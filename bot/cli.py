"""The `skyrun` command line: dev stack, bot, worker, and runs by hand."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.console import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UNKNOWN_RUN,
    exit_code_for,
    follow,
    print_summary,
)
from worker.costview import format_usd
from worker.formatting import format_duration

if TYPE_CHECKING:
    from worker.contract import RunProgress, RunRequest
    from worker.runcontrol import RunControl
    from worker.settings import Settings


APPROVED = "approved {run_id}: it launches now"
COST_TIMEOUT_S = 5.0
"""How long `skyrun runs` waits for a run's cost (its progress query)."""
NO_TEMPORAL = (
    "cannot reach Temporal at {target}: {error}\n"
    "start the local stack with `skyrun dev` (or `make run`), or set TEMPORAL_ADDRESS"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyrun", description="Run ML pipelines as durable Temporal workflows over SkyPilot."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = sub.add_parser("dev", help="everything on one machine: Temporal dev server, worker, bot")
    dev.add_argument("--example", metavar="REPO", help="start one run of REPO once the stack is up")
    sub.add_parser("bot", help="the webhook / Slack / run pages server")
    sub.add_parser("worker", help="a worker: runs workflows and their activities")
    run = sub.add_parser("run", help="start a run by hand")
    run.add_argument("repo", help="a git URL or a local path")
    run.add_argument(
        "--ref", default="", help="branch, tag or commit (default: the default branch)"
    )
    run.add_argument(
        "--stage", action="append", default=[], help="run only this stage (repeatable)"
    )
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    run.add_argument(
        "--wait", action="store_true", help="follow the run; exit non-zero if it fails"
    )
    run.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=a,b",
        help="one run per combination of the comma-separated values (repeatable)",
    )
    runs = sub.add_parser("runs", help="list recent runs")
    runs.add_argument("--repo")
    runs.add_argument("--state")
    runs.add_argument("--limit", type=int, default=20)
    sub.add_parser("clusters", help="clusters skyrun holds now: run, state, up since, cost so far")
    status = sub.add_parser("status", help="show one run")
    status.add_argument("run_id")
    cancel = sub.add_parser("cancel", help="cancel a run (its clusters are still torn down)")
    cancel.add_argument("run_id")
    # Retry from the failed stage.
    retry = sub.add_parser(
        "retry",
        help="retry a failed or cancelled run from its failed stage (succeeded stages reused)",
    )
    retry.add_argument("run_id")
    retry.add_argument(
        "--wait", action="store_true", help="follow the retry; exit non-zero if it fails"
    )
    approve = sub.add_parser("approve", help="approve a run that waits for budget approval")
    approve.add_argument("run_id")
    sub.add_parser("check", help="what is configured and reachable")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    from worker.logsetup import configure_logging
    from worker.settings import load_settings

    try:
        settings = load_settings()
    except ValueError as err:
        print(f"skyrun: invalid settings: {err}", file=sys.stderr)
        _exit(EXIT_USAGE)
    configure_logging()
    command = args.command
    try:
        if command == "bot":
            from bot.server import serve_bot

            code = serve_bot(settings)
        else:
            code = asyncio.run(_dispatch(command, args, settings))
    except KeyboardInterrupt:
        code = 130
    _exit(code)


def _exit(code: int) -> None:
    """Leave deliberately: temporalio's runtime can crash at interpreter exit (sdk-python#300)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _dispatch(command: str, args: argparse.Namespace, settings: Settings) -> int:
    if command == "dev":
        from bot.dev import run_dev

        return await run_dev(settings, example=args.example)
    if command == "worker":
        from worker.process import run_worker

        return await run_worker(settings)
    if command == "check":
        from worker.check import run_check

        return await run_check(settings)
    control = await _control(settings)
    if control is None:
        return EXIT_FAILED
    if command == "run":
        return await _run(args, settings, control)
    if command == "runs":
        return await _runs(args, control)
    if command == "status":
        return await _status(args.run_id, settings, control)
    if command == "clusters":
        return await _clusters(control)
    if command == "cancel":
        cancelled = await control.cancel(args.run_id)
        print(f"cancelling {args.run_id}" if cancelled else f"{args.run_id} is not running")
        return EXIT_OK if cancelled else EXIT_FAILED
    if command == "retry":
        return await _retry(args, settings, control)
    if command == "approve":
        user = os.environ.get("USER") or "cli"
        problem = await control.approve(args.run_id, user, via="cli")
        print(problem or APPROVED.format(run_id=args.run_id), file=sys.stderr if problem else None)
        return EXIT_FAILED if problem else EXIT_OK
    raise AssertionError(command)


async def _control(settings: Settings) -> RunControl | None:
    from worker.runcontrol import RunControl
    from worker.temporal import connect

    try:
        client = await connect(settings)
    except RuntimeError as err:
        print(NO_TEMPORAL.format(target=settings.temporal_target, error=err), file=sys.stderr)
        return None
    return RunControl(client, settings.temporal_task_queue)


async def _run(args: argparse.Namespace, settings: Settings, control: RunControl) -> int:
    from worker.manual import manual_request
    from worker.pipeline import parse_env_assignments

    try:
        envs = parse_env_assignments(args.env)
        request = await manual_request(args.repo, args.ref, args.stage, envs)
    except ValueError as err:
        print(f"skyrun run: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.sweep:
        return await _sweep(args, settings, control, request)
    try:
        outcome = await control.start(request)
    except ValueError as err:
        print(f"skyrun run: {err}", file=sys.stderr)
        return EXIT_USAGE
    from worker.links import Links

    links = Links(settings)
    verb = "started" if outcome.started else "already running"
    print(f"{verb}: {outcome.run_id}  {links.run(outcome.run_id)}")
    for other in outcome.superseded:
        print(f"superseded: {other} (cancelled)")
    if not args.wait:
        return EXIT_OK
    progress = await follow(control, outcome.run_id)
    print_summary(progress, settings)
    return exit_code_for(progress)


async def _retry(args: argparse.Namespace, settings: Settings, control: RunControl) -> int:
    """`skyrun retry RUN [--wait]`: exit codes as `skyrun run --wait` (refused: 1)."""
    import getpass

    from worker.commands import RUN_ID_RE
    from worker.links import Links
    from worker.retry import ALREADY_RETRIED, RetryRefused

    if not RUN_ID_RE.fullmatch(args.run_id):
        print(f"skyrun retry: {args.run_id!r} is not a run id (see `skyrun runs`)", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcome = await control.retry(args.run_id, requested_by=getpass.getuser())
    except RetryRefused as err:
        print(f"skyrun retry: {err}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as err:  # too large for a run's history
        print(f"skyrun retry: {err}", file=sys.stderr)
        return EXIT_USAGE
    links = Links(settings)
    if outcome.started:
        print(f"started: {outcome.run_id}  {links.run(outcome.run_id)}")
    else:
        print(ALREADY_RETRIED.format(run_id=args.run_id, retry_id=outcome.run_id))
    for stage in outcome.plan.reused:
        print(f"  {stage.name:<14} reused from {stage.reused_from}")
    for name in outcome.plan.rerun:
        print(f"  {name:<14} runs again: {outcome.plan.reasons.get(name, '')}")
    if not args.wait:
        return EXIT_OK
    progress = await follow(control, outcome.run_id)
    print_summary(progress, settings)
    return exit_code_for(progress)


SWEEP_EXAMPLE = "skyrun run REPO --sweep LR=0.01,0.1"
SWEEP_STARTED = "{verb}: sweep {sweep_id}, {count} runs"
SWEEP_RUN = "  {run_id}  {values}  {url}"
SWEEP_CANCEL = "cancel all of them with: skyrun cancel {sweep_id}"


async def _sweep(
    args: argparse.Namespace, settings: Settings, control: RunControl, base: RunRequest
) -> int:
    """`skyrun run ... --sweep KEY=a,b`: one run per combination; `--wait` follows them all and
    exits as the worst of them (cancelled 3, failed 1)."""
    from worker.commands import parse_sweep
    from worker.links import Links
    from worker.sweepspec import SweepRequest, child_id, combinations, describe

    try:
        axes = parse_sweep(args.sweep, SWEEP_EXAMPLE)
        outcome = await control.start_sweep(SweepRequest(base, axes), settings.max_sweep)
    except ValueError as err:
        print(f"skyrun run: {err}", file=sys.stderr)
        return EXIT_USAGE
    links = Links(settings)
    combos = combinations(axes)
    verb = "started" if outcome.started else "already running"
    print(SWEEP_STARTED.format(verb=verb, sweep_id=outcome.run_id, count=len(combos)))
    run_ids = [child_id(outcome.run_id, index) for index in range(len(combos))]
    for run_id, values in zip(run_ids, combos, strict=True):
        print(SWEEP_RUN.format(run_id=run_id, values=describe(values), url=links.run(run_id)))
    print(SWEEP_CANCEL.format(sweep_id=outcome.run_id))
    if not args.wait:
        return EXIT_OK
    codes = []
    for run_id in run_ids:
        progress = await _finished(control, run_id)
        print_summary(progress, settings)
        codes.append(exit_code_for(progress))
    return max(codes, key=[EXIT_OK, EXIT_FAILED, EXIT_CANCELLED].index)


async def _finished(control: RunControl, run_id: str) -> RunProgress | None:
    """A sweep's run once it is over (it may not exist for a moment after the sweep starts)."""
    missing = 0
    while missing < FIND_TRIES:
        progress = await control.progress(run_id)
        if progress is not None and progress.state.finished:
            return progress
        missing = missing + 1 if progress is None else 0
        await asyncio.sleep(FOLLOW_INTERVAL_S)
    print(UNKNOWN_RUN.format(run_id=run_id), file=sys.stderr)
    return None


FIND_TRIES = 120
"""How many times a sweep's run is looked for before it counts as missing (a minute)."""
FOLLOW_INTERVAL_S = 0.5


async def _runs(args: argparse.Namespace, control: RunControl) -> int:
    runs = await control.list_runs(limit=args.limit, repo=args.repo, state=args.state)
    if not runs:
        print("no runs")
    costs = await _costs(control, [run.run_id for run in runs])
    for run in runs:
        took = format_duration(run.duration_s)
        print(
            f"{run.run_id:<28} {run.state.value:<10} {run.repo:<30} "
            f"{run.ref or '-':<14} {run.trigger:<8} {took:<12} {costs.get(run.run_id, '-')}"
        )
    return EXIT_OK


async def _costs(control: RunControl, run_ids: list[str]) -> dict[str, str]:
    """Each run's cost as the list shows it (a run that does not answer in time shows `-`)."""

    async def one(run_id: str) -> tuple[str, str]:
        try:
            progress = await asyncio.wait_for(control.progress(run_id), COST_TIMEOUT_S)
        except Exception:  # a list must not fail on one run's query
            return run_id, "-"
        if progress is None or not progress.clusters:
            return run_id, "-"
        return run_id, format_usd(progress.cost_usd)

    return dict(await asyncio.gather(*(one(run_id) for run_id in run_ids)))


NO_CLUSTERS = "no clusters: no run or lane of this deployment holds one"
CLUSTERS_HEADING = (
    f"{'CLUSTER':<44} {'RUN':<28} {'IN USE BY':<12} {'UP SINCE':<24} {'WARM UNTIL':<24} COST SO FAR"
)
CLUSTER_ROW = "{name:<44} {run_id:<28} {state:<12} {since:<24} {until:<24} {cost}"
CLUSTER_IDLE = "-"
CLUSTER_WARM = "warm"
"""In use by nobody: kept up for its lane's next run (`keep_warm_minutes`)."""
CLUSTER_TEARING_DOWN = "tearing down"
"""A warm cluster whose time ended, its teardown under way (or waiting for its worker)."""
WARM_UNKNOWN = "skyrun: warm clusters not listed: the lanes did not answer ({error})"
MAX_LISTED_RUNS = 200


async def _clusters(control: RunControl) -> int:
    """The clusters the deployment's running runs hold now (launching ones too), each with its
    run, since when it is up and what it has cost so far. Nothing here decides anything: the
    list of running runs comes from visibility, each run's clusters from its own progress."""
    from worker.contract import StageState
    from worker.costview import up_seconds
    from worker.formatting import format_time

    RUNNING = StageState.RUNNING

    runs = await control.list_runs(limit=MAX_LISTED_RUNS, running_only=True)

    async def held(run_id: str) -> RunProgress | None:
        try:
            return await asyncio.wait_for(control.progress(run_id), COST_TIMEOUT_S)
        except Exception:  # one run that does not answer must not hide the others
            return None

    rows = []
    for progress in await asyncio.gather(*(held(run.run_id) for run in runs)):
        if progress is None:
            continue
        priced = {cluster.name: cluster for cluster in progress.clusters}
        for name in progress.clusters_up:
            cluster = priced.get(name)
            since = format_time(cluster.up_at) if cluster else ""
            cost = "-"
            if cluster is not None and cluster.hourly_usd is not None:
                now = datetime.now(UTC).isoformat()
                cost = format_usd(cluster.hourly_usd * up_seconds(cluster, now) / 3600)
            logical = cluster.cluster if cluster else ""
            using = [s.name for s in progress.stages if s.cluster == logical and s.state is RUNNING]
            state = ",".join(using) or CLUSTER_IDLE
            rows.append(
                CLUSTER_ROW.format(
                    name=name,
                    run_id=progress.run_id,
                    state=state,
                    since=since,
                    until=CLUSTER_IDLE,
                    cost=cost,
                )
            )
    rows += await _warm_rows(control)
    if not rows:
        print(NO_CLUSTERS)
        return EXIT_OK
    print(CLUSTERS_HEADING)
    for row in rows:
        print(row)
    return EXIT_OK


async def _warm_rows(control: RunControl) -> list[str]:
    """The warm clusters the lanes hold, with the run that left them and when they go; their
    cost counts from when they became warm (their run paid for the time before)."""
    from worker.formatting import format_time, seconds_between

    try:
        warm = await asyncio.wait_for(control.warm_clusters(), COST_TIMEOUT_S * 2)
    except Exception as err:  # the list of running runs still stands without them
        print(WARM_UNKNOWN.format(error=str(err) or type(err).__name__), file=sys.stderr)
        return []
    now = datetime.now(UTC).isoformat()
    rows = []
    for cluster in warm:
        cost = "-"
        held = seconds_between(cluster.since, now) if cluster.since else None
        if cluster.hourly_usd is not None and held is not None:
            cost = format_usd(cluster.hourly_usd * max(0.0, held) / 3600)
        rows.append(
            CLUSTER_ROW.format(
                name=cluster.name,
                run_id=cluster.run_id,
                state=(
                    CLUSTER_WARM
                    if datetime.fromisoformat(cluster.until) > datetime.now(UTC)
                    else CLUSTER_TEARING_DOWN
                ),
                since=format_time(cluster.since) if cluster.since else CLUSTER_IDLE,
                until=format_time(cluster.until),
                cost=cost,
            )
        )
    return rows


async def _status(run_id: str, settings: Settings, control: RunControl) -> int:
    progress = await control.progress(run_id)
    if progress is None:
        print(UNKNOWN_RUN.format(run_id=run_id), file=sys.stderr)
        return EXIT_FAILED
    for stage in progress.stages:
        took = format_duration(stage.duration_s) if stage.duration_s is not None else ""
        print(f"  {stage.name:<14} {stage.state.value:<10} {stage.cluster:<12} {took}")
    print_summary(progress, settings)
    return EXIT_OK


if __name__ == "__main__":
    main()
