"""The pipeline's activities: checkout and plan, run a stage, tear clusters down, wait on a lane."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

import yaml
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from worker import metrics as worker_metrics
from worker.backends.base import (
    BackendError,
    ComputeBackend,
    InfraError,
    TaskRun,
    TaskSpecError,
    cluster_name_for,
)
from worker.budget import Verdict as BudgetVerdict
from worker.budget import judge, judge_month, monthly_budget_for
from worker.contract import INFRA_CAUSES, RunRequest, StageEstimate, Trigger
from worker.cost import (
    PlannedCluster,
    Pricer,
    SettingsPricer,
    SkyPilotPricer,
    estimate,
    lane_history,
)
from worker.gitcheckout import CheckoutError, checkout, default_branch
from worker.ledger import month_of, spent_this_month
from worker.limits import MAX_ERROR_CHARS, MAX_PREPARED_BYTES, bounded, payload_bytes
from worker.logparse import parse_metrics, parse_report, tail_lines
from worker.logstore import LogStore, LogStoreError
from worker.masking import Masker
from worker.models import (
    CleanupInput,
    DownInput,
    GatesInput,
    GatesOutput,
    LaneInput,
    MetricPatternModel,
    PlannedStage,
    PrepareInput,
    PrepareOutput,
    StageInput,
    StageOutput,
)
from worker.pipeline import (
    PIPELINE_FILE,
    MetricPattern,
    Pipeline,
    PipelineError,
    Stage,
    branch_matches,
    clusters_after,
    launches,
    load_pipeline,
    merge_envs,
    read_task_files,
    resolve_needs,
    select_stages,
)
from worker.settings import Settings

USER_ERROR = "UserError"
HEARTBEAT_EVERY_S = 2.0
NOT_WATCHED = "branch {branch} is not watched by on.push in {file}"
PLAN_TOO_LARGE = (
    "the planned run (task files, envs and metric patterns of {count} stages) is {size:,} bytes "
    "long once encoded; the limit is {limit:,}: make the task files or the envs in {file} "
    "smaller, or run fewer stages at once (name the stages to run)"
)
NO_LEDGER_CLIENT = "this worker has no Temporal client to read the month's ledger with"
NO_BASELINE_CLIENT = (
    "this worker has no Temporal client to find the baseline run with; start it with "
    "`skyrun worker`"
)
PR_RUNS_OFF = "pull request events do not start runs: {file} does not set on.pull_request: true"
MERGE_GROUP_OFF = "merge queue groups do not start runs: {file} does not set on.merge_group: true"
# Just-in-time provisioning (issue 12).
LOG_PROVISIONING = (
    "[skyrun] stage {stage}: provisioning cluster {cluster} ahead of the stages it needs "
    "(launch with setup; the job follows on the ready cluster)"
)
LOG_PROVISION_ENDED = "[skyrun] cluster {cluster} provisioned (setup exited with status {code})\n"
LOG_PROVISIONED = "[skyrun] stage {stage}: job on cluster {cluster}, provisioned ahead of time"
LOG_WARM = (
    "[skyrun] stage {stage}: reused warm cluster {cluster} from run {run_id} (no provisioning; "
    "its setup runs again and the workdir re-syncs)"
)
LOG_INFRA_RECOVERING = (
    "[skyrun] infrastructure failure ({cause}): {error}\n"
    "[skyrun] not the task's failure: relaunching cluster {cluster} ({attempt} of "
    "max_infra_retries {limit}; SkyPilot fails over across regions and zones)\n"
)
LOG_INFRA_LOST_OUTPUTS = (
    "[skyrun] the relaunched cluster starts empty: files earlier stages left on it are gone\n"
)
INFRA_GAVE_UP = (
    "stage '{stage}' failed on the infrastructure, not in its job: {cause} ({error}); "
    "{tries} relaunches did not help (max_infra_retries: {limit} in {file})"
)
INFRA_NO_RETRIES = (
    "stage '{stage}' failed on the infrastructure, not in its job: {cause} ({error}); "
    "max_infra_retries is 0 in {file}, so it was not relaunched"
)


HISTORY_TIMEOUT_S = 20.0
"""The estimate waits this long for the lane's last successful run, then uses the worst case."""


def pricer_for(settings: Settings, backend: str) -> Pricer:
    """SkyPilot's catalogs on the SkyPilot backend, the SKYRUN_*_HOUR_USD settings elsewhere."""
    if backend == "skypilot":
        return SkyPilotPricer(settings.gpu_hour_usd, settings.cpu_hour_usd)
    return SettingsPricer(settings.gpu_hour_usd, settings.cpu_hour_usd, where=backend)


def user_error(message: str) -> ApplicationError:
    """A failure the user caused (bad pipeline, missing task, bad ref): never retried.

    Its message is bounded here, the one place user errors enter Temporal, so a parser's or
    SkyPilot's megabyte of text cannot fail the run with "Failure exceeds size limit".
    """
    return ApplicationError(bounded(message), type=USER_ERROR, non_retryable=True)


def backend_failure(err: BackendError) -> ApplicationError:
    """A backend failure (retried by the workflow's policy), its message bounded."""
    return ApplicationError(bounded(str(err)), type="BackendError")


@contextlib.contextmanager
def failures_bounded() -> Iterator[None]:
    """Whatever fails inside leaves as an ApplicationError with a bounded message and no cause.

    Temporal would otherwise send an unexpected exception's whole text, and its causes', as the
    failure; past its size limit the run fails with only "Failure exceeds size limit".
    """
    try:
        yield
    except ApplicationError as err:
        if len(err.message) <= MAX_ERROR_CHARS and err.__cause__ is None:
            raise
        raise ApplicationError(
            bounded(err.message), type=err.type, non_retryable=err.non_retryable
        ) from None
    except Exception as err:
        activity.logger.warning("activity failed", exc_info=True)
        # The same type name, so retry policies that name it still apply.
        raise ApplicationError(bounded(str(err)), type=type(err).__name__) from None


@contextlib.asynccontextmanager
async def heartbeating(details: Callable[[], object] = lambda: None) -> AsyncIterator[None]:
    """Heartbeat in the background while a long step runs, so cancellation reaches it."""

    async def beat() -> None:
        while True:
            activity.heartbeat(details())
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PipelineActivities:
    """Activities bound to this worker's settings, backend and Temporal client."""

    def __init__(
        self,
        settings: Settings,
        backend: ComputeBackend,
        client: Client | None = None,
        token_provider: Callable[[RunRequest], str | None] | None = None,
        masker: Masker | None = None,
        pricer: Pricer | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.client = client
        self.logs = LogStore(settings.logs_dir)
        self.pinned_queue = ""
        """This worker's own queue when a run's activities must all stay here (set by main)."""
        self._token_provider = token_provider or (lambda _request: None)
        self.masker = masker or Masker.from_settings(settings)
        """Masks every secret this worker holds out of the stage logs it writes."""
        self.pricer = pricer or pricer_for(settings, backend.name)
        """Prices the stages' clusters for the run's estimate (worker/cost.py)."""

    def checkout_dir(self, run_id: str) -> Path:
        return self.settings.data_path / "checkouts" / run_id

    async def _checkout(self, run_id: str, request: RunRequest, commit: str) -> str:
        # A GitHub App's provider may mint a token over HTTP: keep it off the event loop.
        token = await asyncio.to_thread(self._token_provider, request)
        try:
            return await checkout(
                request.clone_url, request.ref, commit, self.checkout_dir(run_id), token=token
            )
        except CheckoutError as err:
            if err.user_error:
                raise user_error(str(err)) from None
            raise

    async def _ensure_checkout(self, run_id: str, request: RunRequest, commit: str) -> Path:
        """Re-create the checkout where a task needs it: activities of one run may move workers."""
        path = self.checkout_dir(run_id)
        if not path.is_dir():
            await self._checkout(run_id, request, "" if commit == "local" else commit)
        return path

    @activity.defn(name="prepare_run")
    async def prepare_run(self, data: PrepareInput) -> PrepareOutput:
        with failures_bounded():
            return await self._prepare(data)

    async def _prepare(self, data: PrepareInput) -> PrepareOutput:
        request = data.request
        async with heartbeating():
            commit = await self._checkout(data.run_id, request, request.commit)
            path = self.checkout_dir(data.run_id)
            try:
                pipeline = await asyncio.to_thread(load_pipeline, path)
            except PipelineError as err:
                raise user_error(str(err)) from None
            output = PrepareOutput(
                commit=commit,
                worker_queue=self.pinned_queue,
                stages=[],
                metric_patterns=[MetricPatternModel(m.name, m.pattern) for m in pipeline.metrics],
                autostop_minutes=pipeline.autostop_minutes,
                timeout_minutes=pipeline.timeout_minutes,
                notify_slack=pipeline.notify_slack,
                backend=self.backend.name,
                dashboard_url=self.backend.dashboard_url(),
                worker_gone_s=self.settings.worker_gone_seconds if self.pinned_queue else 0,
                gates=[gate.expr for gate in pipeline.gates],
                max_infra_retries=pipeline.max_infra_retries,
                keep_warm_minutes=pipeline.keep_warm_minutes,
            )
            # Concurrency caps: the pools the run enters before it launches anything.
            output.concurrency = pipeline.concurrency
            output.max_concurrent_runs = self.settings.max_concurrent_runs
            if request.check_push_filter and request.trigger is Trigger.PUSH:
                default = request.default_branch
                if pipeline.on_push is None and not default:
                    token = await asyncio.to_thread(self._token_provider, request)
                    default = await default_branch(request.clone_url, token)
                if not branch_matches(pipeline.on_push, request.ref, default):
                    output.skip_reason = NOT_WATCHED.format(branch=request.ref, file=PIPELINE_FILE)
                    return output
            if request.check_pr_filter and not pipeline.on_pull_request:
                output.skip_reason = PR_RUNS_OFF.format(file=PIPELINE_FILE)
                return output
            if request.trigger is Trigger.MERGE_GROUP and not pipeline.on_merge_group:
                output.skip_reason = MERGE_GROUP_OFF.format(file=PIPELINE_FILE)
                return output
            output.stages = await self._plan(data.run_id, request, pipeline, path)
            output.estimate, output.estimate_usd = await self._estimate(
                data.run_id, request.lane, output
            )
            verdict = judge(output.estimate_usd, pipeline.max_run_usd, self.settings.approval_usd)
            if not verdict.reason:
                verdict = await self._judge_month(request.repo, output.estimate_usd)
            output.approval_reason, output.approval_limit_usd = verdict.reason, verdict.limit_usd
            output.approval_timeout_s = self.settings.approval_timeout_s
            limits = [u for u in (pipeline.max_run_usd, self.settings.approval_usd) if u > 0]
            output.run_limit_usd = min(limits, default=0.0)
            # The output is one Temporal payload, and each stage's part goes into a later
            # activity input with the request: refuse here what could not travel there.
            size = await asyncio.to_thread(payload_bytes, output)
            if size > MAX_PREPARED_BYTES:
                raise user_error(
                    PLAN_TOO_LARGE.format(
                        count=len(output.stages),
                        size=size,
                        limit=MAX_PREPARED_BYTES,
                        file=PIPELINE_FILE,
                    )
                )
            return output

    async def _plan(
        self, run_id: str, request: RunRequest, pipeline: Pipeline, path: Path
    ) -> list[PlannedStage]:
        try:
            stages = select_stages(pipeline, request.stages)
        except PipelineError as err:
            raise user_error(str(err)) from None
        try:
            # Off the event loop: reading and checking up to MAX_PIPELINE_TASKS_BYTES of YAML
            # must not stop the heartbeats (a stalled prepare would time out, retry, and wait).
            tasks = await asyncio.to_thread(_read_tasks, path, stages)
        except PipelineError as err:
            raise user_error(str(err)) from None
        planned: list[PlannedStage] = []
        needs = resolve_needs(stages)
        for index, (stage, (task_yaml, task_envs)) in enumerate(zip(stages, tasks, strict=True)):
            envs = merge_envs(
                task_envs, pipeline.envs, self.settings.skypilot_bucket_url, request.envs
            )
            envs.update(SKYRUN_RUN_ID=run_id, SKYRUN_STAGE=stage.name)
            # The same for a retry as for the run it retries: where earlier stages kept data.
            envs.update(SKYRUN_DATA_KEY=request.data_key or run_id)
            try:
                await self.backend.validate(task_yaml, envs, path)
            except TaskSpecError as err:
                raise user_error(f"stage '{stage.name}' ({stage.task}): {err}") from None
            still_needed = clusters_after(stages, index)
            planned.append(
                PlannedStage(
                    name=stage.name,
                    cluster=stage.cluster,
                    cluster_name=cluster_name_for(run_id, stage.cluster),
                    task_file=stage.task,
                    task_yaml=task_yaml,
                    envs=envs,
                    launch=launches(stages, index),
                    needs=needs[stage.name],
                    managed=stage.managed,
                    prelaunch=stage.prelaunch,
                    # A managed job's cluster is the jobs controller's: never kept warm.
                    fingerprint=cluster_fingerprint(self.backend.name, task_yaml)
                    if launches(stages, index) and not stage.managed
                    else "",
                )
            )
            if stage.cluster not in still_needed:
                planned[-1].down_after = [cluster_name_for(run_id, stage.cluster)]
        return planned

    async def _estimate(
        self, run_id: str, lane: str, output: PrepareOutput
    ) -> tuple[list[StageEstimate], float | None]:
        """The run's estimate (cost): prices x the lane's last successful durations."""
        history = None
        if self.client is not None and lane:
            try:
                history = await asyncio.wait_for(
                    lane_history(self.client, self.settings.temporal_task_queue, lane, run_id),
                    HISTORY_TIMEOUT_S,
                )
            except Exception as err:  # an estimate without history says "worst case"
                activity.logger.warning("estimate: no lane history: %s", err)
        stages = [
            PlannedCluster(s.name, s.cluster, s.launch, s.task_yaml, s.envs) for s in output.stages
        ]
        return await estimate(stages, self.pricer, history, output.timeout_minutes)

    @activity.defn(name="resolve_default_branch")
    async def resolve_default_branch(self, data: PrepareInput) -> str:
        """The repository's default branch ("" when its remote does not say)."""
        token = await asyncio.to_thread(self._token_provider, data.request)
        return await default_branch(data.request.clone_url, token)

    @activity.defn(name="run_stage")
    async def run_stage(self, data: StageInput) -> StageOutput:
        with failures_bounded():
            return await self._run_stage(data)

    @activity.defn(name="provision_stage")
    async def provision_stage(self, data: StageInput) -> StageOutput:
        """Just-in-time provisioning (issue 12): launch the stage's cluster with the task's
        setup, no job, while the stages it needs still run. Its exit code is the setup's."""
        with failures_bounded():
            return await self._run_stage(replace(data, provision=True))

    async def _run_stage(self, data: StageInput) -> StageOutput:
        stage = data.stage
        path = await self._ensure_checkout(data.run_id, data.request, data.commit)
        attempt = activity.info().attempt
        task = TaskRun(
            run_id=data.run_id,
            stage=stage.name,
            cluster_name=stage.cluster_name,
            task_yaml=stage.task_yaml,
            envs=stage.envs,
            checkout_dir=path,
            launch=stage.launch or data.provision,
            autostop_minutes=data.autostop_minutes,
            labels={"skyrun-run": data.run_id, "skyrun-stage": stage.name},
            lane=data.request.lane,
            provision_only=data.provision,
            managed=stage.managed,
        )
        raw = self._open_log(data.run_id, stage.name)
        started = time.monotonic()
        job_at: list[float] = []
        task.job_started = lambda: job_at.append(time.monotonic())
        setup_at: list[float] = []
        task.setup_started = lambda: setup_at.append(time.monotonic())
        # Everything written into the log store goes through the masker, even our own lines.
        with raw, contextlib.closing(self.masker.stream(raw)) as masked:
            log = cast(BinaryIO, masked)
            offset = raw.tell()
            verb = "launch" if stage.launch else "exec"
            header = (
                f"[skyrun] stage {stage.name}: {verb} {stage.task_file} on cluster {stage.cluster}"
            )
            if data.warm_from:
                header = LOG_WARM.format(
                    stage=stage.name, cluster=stage.cluster, run_id=data.warm_from
                )
            if data.provision:
                header = LOG_PROVISIONING.format(stage=stage.name, cluster=stage.cluster)
            elif data.provisioned:
                header = LOG_PROVISIONED.format(stage=stage.name, cluster=stage.cluster)
            if attempt > 1:
                header += f" (attempt {attempt})"
            log.write(f"{header}\n".encode())
            log.flush()
            async with heartbeating(lambda: stage.name):
                try:
                    code, recoveries = await self._run_recovering(task, log, data)
                except TaskSpecError as err:
                    # Errors become the run's progress: masked like the log, as they may quote it.
                    message = f"stage '{stage.name}' ({stage.task_file}): {err}"
                    raise user_error(self.masker.mask(message)) from None
                except BackendError as err:
                    log.write(f"[skyrun] backend error: {bounded(str(err))}\n".encode())
                    raise backend_failure(BackendError(self.masker.mask(str(err)))) from None
            if data.provision:
                log.write(LOG_PROVISION_ENDED.format(cluster=stage.cluster, code=code).encode())
            else:
                log.write(f"[skyrun] stage {stage.name} exited with status {code}\n".encode())
            masked.close()
            # Read back through our own descriptor: the path may have been swapped meanwhile.
            text = await asyncio.to_thread(_read_from, raw, offset)
        duration = time.monotonic() - started
        worker_metrics.observe_stage(stage.name, code, duration)
        patterns = [MetricPattern(m.name, m.pattern) for m in data.metric_patterns]
        return StageOutput(
            exit_code=code,
            metrics=parse_metrics(text, patterns),
            report=parse_report(text),
            log_tail=tail_lines(text, 20),
            duration_s=round(duration, 3),
            infra_recoveries=recoveries,
            launch_s=round(job_at[-1] - started, 3) if job_at else None,
            setup_s=round(setup_at[-1] - started, 3) if setup_at else None,
        )

    async def _run_recovering(
        self, task: TaskRun, log: BinaryIO, data: StageInput
    ) -> tuple[int, list[str]]:
        """Run the task; relaunch it when the infrastructure (not the job) failed, up to the
        pipeline's `max_infra_retries`. Returns the job's status and the causes recovered from.

        A job that exits non-zero is the task's failure and is returned, never retried here.
        """
        recoveries: list[str] = []
        limit = max(0, data.max_infra_retries)
        while True:
            try:
                return await self.backend.run(task, log), recoveries
            except InfraError as err:
                cause = INFRA_CAUSES[err.cause]
                error = self.masker.mask(bounded(str(err), 1000))
                if len(recoveries) >= limit:
                    worker_metrics.observe_infra_failure(err.cause.value, recovered=False)
                    template = INFRA_GAVE_UP if limit else INFRA_NO_RETRIES
                    message = template.format(
                        stage=data.stage.name,
                        cause=cause,
                        error=error,
                        tries=len(recoveries),
                        limit=limit,
                        file=PIPELINE_FILE,
                    )
                    log.write(f"[skyrun] {message}\n".encode())
                    raise user_error(message) from None
                recoveries.append(err.cause.value)
                worker_metrics.observe_infra_failure(err.cause.value, recovered=True)
                log.write(
                    LOG_INFRA_RECOVERING.format(
                        cause=cause,
                        error=error,
                        cluster=data.stage.cluster,
                        attempt=len(recoveries),
                        limit=limit,
                    ).encode()
                )
                if not task.launch:
                    log.write(LOG_INFRA_LOST_OUTPUTS.encode())
                log.flush()
                # Whatever is left of the cluster goes first, so the relaunch provisions anew.
                await self.backend.down(task.cluster_name)
                task.launch = True

    async def _judge_month(self, repo: str, estimate_usd: float | None) -> BudgetVerdict:
        """Whether the run would take its repository past its monthly budget (fail closed: a
        ledger that cannot be read means approval)."""
        budget = monthly_budget_for(repo, self.settings.monthly_budgets)
        if budget is None:
            return BudgetVerdict("")
        month = month_of(datetime.now(UTC).isoformat())
        spent: float | None = None
        error = NO_LEDGER_CLIENT
        if self.client is not None:
            try:
                queue = self.settings.temporal_task_queue
                spent = await spent_this_month(self.client, repo, month, queue)
            except Exception as err:  # the ledger did not answer: unknown, never "nothing spent"
                error = bounded(str(err) or type(err).__name__, 200)
        return judge_month(repo, estimate_usd, spent, budget, error)

    def _open_log(self, run_id: str, stage: str) -> BinaryIO:
        try:
            return self.logs.open_append(run_id, stage)
        except LogStoreError as err:
            raise ApplicationError(str(err), type="LogStoreError", non_retryable=True) from None

    @activity.defn(name="down_clusters")
    async def down_clusters(self, data: DownInput) -> None:
        async with heartbeating():
            for name in data.cluster_names:
                try:
                    await self.backend.down(name)
                except BackendError as err:
                    raise backend_failure(err) from None

    @activity.defn(name="cleanup_run")
    async def cleanup_run(self, data: CleanupInput) -> None:
        path = self.checkout_dir(data.run_id)
        if path.exists():
            await asyncio.to_thread(shutil.rmtree, path, True)
        # The local backend's bucket of a run without a lane goes with the run.
        if (cleanup := getattr(self.backend, "cleanup_run", None)) is not None:
            await cleanup(data.run_id)

    @activity.defn(name="wait_for_lane")
    async def wait_for_lane(self, data: LaneInput) -> None:
        """Block until earlier runs of the lane have closed (they were asked to cancel)."""
        if self.client is None:
            return
        async with heartbeating():
            for run_id in data.run_ids:
                handle = self.client.get_workflow_handle(run_id)
                while True:
                    try:
                        desc = await handle.describe()
                    except RPCError as err:
                        if err.status is RPCStatusCode.NOT_FOUND:
                            break
                        raise
                    if desc.status not in (None, WorkflowExecutionStatus.RUNNING):
                        break
                    await asyncio.sleep(0.5)

    @activity.defn(name="evaluate_gates")
    async def evaluate_gates(self, data: GatesInput) -> GatesOutput:
        """Decide the pipeline's gates against the run's metrics and its baseline's."""
        with failures_bounded():
            return await self._evaluate_gates(data)

    async def _evaluate_gates(self, data: GatesInput) -> GatesOutput:
        from worker.baseline import Baselines
        from worker.gates import evaluate, parse_gate, verdict_of

        gates = [parse_gate(expr) for expr in data.gates]
        found = None
        if any(gate.against_base for gate in gates):
            if self.client is None:
                raise ApplicationError(NO_BASELINE_CLIENT, type="NoClient", non_retryable=True)
            # A failed lookup raises: retried, then the workflow fails the gates undecided.
            found = await Baselines(self.client, self.settings.temporal_task_queue).of(
                data.progress
            )
        results = evaluate(gates, data.progress.metrics, found.metrics if found else None)
        return GatesOutput(verdict_of(results), results, found.run_id if found else "")


def cluster_fingerprint(backend: str, task_yaml: str) -> str:
    """What a cluster is launched with, as a short digest: the backend and the task's
    `resources` and `num_nodes` (a warm cluster is reused only for the same)."""
    try:
        config = yaml.safe_load(task_yaml)
    except yaml.YAMLError:
        return ""
    if not isinstance(config, dict):
        return ""
    asked = {
        "backend": backend,
        "resources": config.get("resources"),
        "nodes": config.get("num_nodes"),
    }
    text = json.dumps(asked, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_from(log: BinaryIO, offset: int) -> str:
    chunks = []
    while chunk := os.pread(log.fileno(), 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _read_tasks(path: Path, stages: list[Stage]) -> list[tuple[str, dict[str, str | None]]]:
    """Each stage's task text (checked by `read_task_files`) with the envs it declares."""
    return [(text, _task_envs(text)) for text in read_task_files(path, stages)]


def _task_envs(task_yaml: str) -> dict[str, str | None]:
    import yaml

    try:
        # libyaml when present: 256 KiB of YAML takes it milliseconds, pure Python seconds.
        config = yaml.load(task_yaml, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return {}
    envs = config.get("envs") if isinstance(config, dict) else None
    if not isinstance(envs, dict):
        return {}
    return {str(k): None if v is None else str(v) for k, v in envs.items()}
