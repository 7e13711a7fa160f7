"""The price policy, one implementation (DESIGN.md "Cost estimate"): the hourly price of a
stage's cluster, the duration a stage is expected to take, and the estimate of a run.

Prices:
- On the SkyPilot backend, SkyPilot's own price catalogs through its own code: for each
  `resources` of the task, each candidate cloud (the one the task names, else the clouds
  SkyPilot has enabled) proposes its cheapest feasible launchable resources
  (`Cloud.get_feasible_launchable_resources`, as SkyPilot's optimizer does), expanded to the
  regions that offer them, and priced with `Resources.get_cost` (x nodes); the cheapest wins.
  SkyPilot reads its catalogs from `~/.sky/catalogs/<schema version>/<cloud>/vms.csv` (under
  `SKY_RUNTIME_DIR` when set) and fetches one from its hosted mirror only when the file is
  missing, or older than the cloud's pull frequency (hours) and not modified by hand (an `.md5`
  under `.meta/` that differs). `sky` is imported lazily, here only on the SkyPilot backend.
- Infrastructure without a catalog (Kubernetes, SSH node pools, Slurm, the local backend):
  `SKYRUN_GPU_HOUR_USD` x GPUs + `SKYRUN_CPU_HOUR_USD` x CPUs, from what the task asks for.

Durations: a stage's time in the lane's last successful run, else the worst case, the
pipeline's `timeout_minutes`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import yaml
from temporalio.client import Client, WorkflowExecutionStatus

from worker.contract import RunResult, RunState, StageEstimate, StageState
from worker.costview import total_of
from worker.runcontrol import runs_query

log = logging.getLogger(__name__)

CATALOG_FREE = frozenset({"kubernetes", "ssh", "slurm", "local"})
"""Infrastructure SkyPilot has no price catalog for: priced with the SKYRUN_*_HOUR_USD settings."""
HISTORY_CANDIDATES = 5
RESULT_TIMEOUT = timedelta(seconds=10)
MAX_PRICE_ERROR_CHARS = 300

# User-facing notes (an estimate line says why its price is unknown).
NO_PRICE = "SkyPilot could not price the task's resources: {error}"
NO_FEASIBLE = "no enabled cloud offers the resources the task asks for ({resources})"
NO_CLOUDS = (
    "the task names no cloud and SkyPilot's enabled clouds could not be read ({error}); "
    "name one with `infra:` in the task's resources"
)
NO_CLOUD_ENABLED = "the task names no cloud and SkyPilot has none enabled (`sky check`)"
BAD_TASK = "the task's resources could not be read: {error}"
SETTINGS_PRICED = "{what} on {where}"


@dataclass(frozen=True)
class Price:
    """The hourly price of one cluster (None: unknown, `note` says why)."""

    hourly_usd: float | None
    resources: str = ""
    note: str = ""


@dataclass(frozen=True)
class Requested:
    """What a task asks for, read from its YAML without SkyPilot."""

    accelerators: Mapping[str, float]
    cpus: float | None
    infra: str
    num_nodes: int


class Pricer(Protocol):
    async def price(self, task_yaml: str, envs: dict[str, str]) -> Price:
        """The hourly price of a cluster for this task (never raises: unknown is a Price)."""
        ...


# -- what a task asks for -------------------------------------------------------------------------


def _number(text: object) -> float | None:
    """`4`, `4.5`, `"4+"`, `"4"` → 4 / 4.5 (the lower bound of `N+`); None otherwise."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text) if math.isfinite(text) and text >= 0 else None
    if isinstance(text, str):
        found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*\+?\s*", text)
        return float(found.group(1)) if found else None
    return None


def _accelerators(value: object) -> dict[str, float]:
    """`A100`, `A100:2`, `{A100: 2}`, or a list/set of choices (the first one)."""
    if isinstance(value, list | tuple) and value:
        return _accelerators(value[0])
    if isinstance(value, str) and value.strip():
        name, _, count = value.strip().partition(":")
        return {name.strip(): _number(count) or 1.0 if count else 1.0}
    if isinstance(value, dict) and value:
        name, count = next(iter(value.items()))
        return {str(name): _number(count) or 1.0 if count is not None else 1.0}
    return {}


def requested(task_yaml: str) -> Requested:
    """The task's accelerators, CPUs (the lower bound of `N+`), infra and nodes; the first of
    `any_of` / `ordered` choices."""
    config = yaml.safe_load(task_yaml) or {}
    if not isinstance(config, dict):
        config = {}
    resources = config.get("resources") or {}
    if not isinstance(resources, dict):
        resources = {}
    for key in ("any_of", "ordered"):
        choices = resources.get(key)
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            resources = {**resources, **choices[0]}
    infra = resources.get("infra") or resources.get("cloud") or ""
    nodes = config.get("num_nodes")
    return Requested(
        accelerators=_accelerators(resources.get("accelerators")),
        cpus=_number(resources.get("cpus")),
        infra=str(infra).split("/", 1)[0].strip().lower(),
        num_nodes=nodes
        if isinstance(nodes, int) and not isinstance(nodes, bool) and nodes > 0
        else 1,
    )


def describe(accelerators: Mapping[str, float], cpus: float | None) -> str:
    """`1x A100`, `8x H100`, `4 CPUs`."""
    if accelerators:
        return ", ".join(f"{count:g}\u00d7 {name}" for name, count in accelerators.items())
    count = cpus if cpus is not None else 1.0
    return f"{count:g} CPU" + ("" if count == 1 else "s")


def settings_price(
    accelerators: Mapping[str, float],
    cpus: float | None,
    nodes: int,
    *,
    gpu_hour_usd: float,
    cpu_hour_usd: float,
    where: str,
) -> Price:
    """SKYRUN_GPU_HOUR_USD x GPUs + SKYRUN_CPU_HOUR_USD x CPUs (1 CPU when the task asks for
    none), x nodes."""
    gpus = sum(accelerators.values())
    count = cpus if cpus is not None else 1.0
    hourly = (gpu_hour_usd * gpus + cpu_hour_usd * count) * nodes
    what = describe(accelerators, cpus if cpus is not None else 1.0)
    if accelerators and cpus is not None:
        what += f", {cpus:g} CPUs"
    if nodes > 1:
        what = f"{nodes}\u00d7 ({what})"
    return Price(round(hourly, 6), SETTINGS_PRICED.format(what=what, where=where))


class SettingsPricer:
    """The local backend (and any backend without a catalog): the SKYRUN_*_HOUR_USD settings."""

    def __init__(self, gpu_hour_usd: float, cpu_hour_usd: float, where: str = "local") -> None:
        self.gpu_hour_usd = gpu_hour_usd
        self.cpu_hour_usd = cpu_hour_usd
        self.where = where

    async def price(self, task_yaml: str, envs: dict[str, str]) -> Price:
        try:
            asked = requested(task_yaml)
        except yaml.YAMLError as err:
            return Price(None, note=BAD_TASK.format(error=_short(err)))
        return settings_price(
            asked.accelerators,
            asked.cpus,
            asked.num_nodes,
            gpu_hour_usd=self.gpu_hour_usd,
            cpu_hour_usd=self.cpu_hour_usd,
            where=self.where,
        )


class SkyPilotPricer:
    """SkyPilot's catalogs through SkyPilot's code; SKYRUN_*_HOUR_USD where it has none."""

    def __init__(
        self,
        gpu_hour_usd: float,
        cpu_hour_usd: float,
        *,
        enabled_clouds: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.gpu_hour_usd = gpu_hour_usd
        self.cpu_hour_usd = cpu_hour_usd
        self._enabled_clouds = enabled_clouds
        self._enabled: list[Any] | None = None

    async def price(self, task_yaml: str, envs: dict[str, str]) -> Price:
        return await asyncio.to_thread(self.price_blocking, task_yaml, envs)

    def price_blocking(self, task_yaml: str, envs: dict[str, str]) -> Price:
        import sky  # lazy on purpose: slow, and only the SkyPilot backend needs it

        try:
            config = yaml.safe_load(task_yaml) or {}
            task = sky.Task.from_yaml_config(config, env_overrides=list(envs.items()))
        except Exception as err:  # the task was validated; this is only a price
            return Price(None, note=BAD_TASK.format(error=_short(err)))
        best: Price | None = None
        notes: list[str] = []
        for resources in task.resources:
            try:
                found = self._cheapest(sky, resources, task.num_nodes)
            except _Unknown as err:
                notes.append(str(err))
                continue
            except Exception as err:  # a catalog that cannot be read or fetched
                notes.append(NO_PRICE.format(error=_short(err)))
                continue
            if found.hourly_usd is not None and (
                best is None or best.hourly_usd is None or found.hourly_usd < best.hourly_usd
            ):
                best = found
        return best or Price(None, note="; ".join(dict.fromkeys(notes)) or NO_CLOUD_ENABLED)

    def _clouds(self, sky: Any) -> list[Any]:
        if self._enabled is None:
            try:
                names = (
                    self._enabled_clouds()
                    if self._enabled_clouds is not None
                    else sky.get(sky.enabled_clouds())
                )
                from sky.utils import registry

                self._enabled = [registry.CLOUD_REGISTRY.from_str(str(n)) for n in names]
            except Exception as err:
                raise _Unknown(NO_CLOUDS.format(error=_short(err))) from None
            self._enabled = [cloud for cloud in self._enabled if cloud is not None]
        if not self._enabled:
            raise _Unknown(NO_CLOUD_ENABLED)
        return self._enabled

    def _cheapest(self, sky: Any, resources: Any, nodes: int) -> Price:
        from sky.utils import resources_utils

        clouds = [resources.cloud] if resources.cloud is not None else self._clouds(sky)
        best: Price | None = None
        for cloud in clouds:
            name = str(cloud).lower()
            if name in CATALOG_FREE:
                found = settings_price(
                    dict(resources.accelerators or {}),
                    _number(resources.cpus) if resources.cpus else _default_cpus(cloud),
                    nodes,
                    gpu_hour_usd=self.gpu_hour_usd,
                    cpu_hour_usd=self.cpu_hour_usd,
                    where=name,
                )
            else:
                feasible = cloud.get_feasible_launchable_resources(resources, nodes)
                if not feasible.resources_list:
                    continue
                cheapest = feasible.resources_list[0]  # sorted by price, as the optimizer relies
                found = min(
                    (
                        _catalog_price(launchable, nodes, name)
                        for launchable in resources_utils.make_launchables_for_valid_region_zones(
                            cheapest
                        )
                    ),
                    key=lambda price: price.hourly_usd or 0.0,
                )
            if best is None or (found.hourly_usd or 0.0) < (best.hourly_usd or 0.0):
                best = found
        if best is None:
            raise _Unknown(NO_FEASIBLE.format(resources=resources))
        return best


class _Unknown(Exception):
    """A price that cannot be known, and why (in words for the estimate line)."""


def _catalog_price(launchable: Any, nodes: int, cloud: str) -> Price:
    hourly = float(launchable.get_cost(3600)) * nodes
    accelerators = dict(launchable.accelerators or {})
    what = describe(accelerators, _number(launchable.cpus))
    where = f"{cloud} {launchable.instance_type}"
    if launchable.region:
        where += f", {launchable.region}"
    if launchable.use_spot:
        where += ", spot"
    if nodes > 1:
        what = f"{nodes}\u00d7 ({what})"
    return Price(round(hourly, 6), f"{what} ({where})")


def _default_cpus(cloud: Any) -> float | None:
    """The vCPUs SkyPilot gives a task that asks for none on this cloud (None: unknown)."""
    try:
        instance = cloud.get_default_instance_type()
        cpus, _memory = cloud.get_vcpus_mem_from_instance_type(instance)
    except Exception:
        return None
    return float(cpus) if cpus else None


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_PRICE_ERROR_CHARS else text[: MAX_PRICE_ERROR_CHARS - 1] + "…"


# -- durations and the estimate -------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """The stage durations of the lane's last successful run."""

    run_id: str
    durations_s: Mapping[str, float]


async def lane_history(client: Client, task_queue: str, lane: str, run_id: str) -> History | None:
    """The lane's latest successful run other than `run_id`, with its stages' durations.

    Found through visibility (an estimate may lag a run that just ended; nothing exact depends
    on it); a closed run's durations come from its result in history.
    """
    if not lane:
        return None
    query = runs_query(lane=lane, state=RunState.SUCCEEDED.value, task_queue=task_queue or None)
    candidates = [
        execution
        async for execution in client.list_workflows(query, limit=HISTORY_CANDIDATES * 4)
        if execution.id != run_id and execution.status is WorkflowExecutionStatus.COMPLETED
    ]
    candidates.sort(key=lambda e: e.close_time or e.start_time, reverse=True)
    for execution in candidates[:HISTORY_CANDIDATES]:
        handle = client.get_workflow_handle(
            execution.id, run_id=execution.run_id, result_type=RunResult
        )
        try:
            result = await handle.result(rpc_timeout=RESULT_TIMEOUT)
        except Exception as err:  # a broken candidate must not fail the estimate
            log.warning("estimate: run %s unreadable: %s", execution.id, err)
            continue
        durations = {
            stage.name: stage.duration_s
            for stage in result.progress.stages
            if stage.state is StageState.SUCCEEDED and stage.duration_s is not None
        }
        if durations:
            return History(execution.id, durations)
    return None


@dataclass(frozen=True)
class PlannedCluster:
    """What the estimate needs of a planned stage."""

    stage: str
    cluster: str
    launch: bool
    task_yaml: str
    envs: dict[str, str]


async def estimate(
    stages: Sequence[PlannedCluster],
    pricer: Pricer,
    history: History | None,
    timeout_minutes: int,
) -> tuple[list[StageEstimate], float | None]:
    """Each stage: its cluster's hourly price (priced once, from the launching stage's task) x
    its minutes in `history`, else `timeout_minutes`; and the total (None when one is unknown).
    """
    prices: dict[str, Price] = {}
    lines: list[StageEstimate] = []
    for stage in stages:
        own = stage.launch or stage.cluster not in prices
        if own:
            prices[stage.cluster] = await pricer.price(stage.task_yaml, stage.envs)
        price = prices[stage.cluster]
        seconds = history.durations_s.get(stage.stage) if history else None
        minutes = seconds / 60 if seconds is not None else float(timeout_minutes)
        usd = None if price.hourly_usd is None else round(price.hourly_usd * minutes / 60, 6)
        lines.append(
            StageEstimate(
                stage=stage.stage,
                cluster=stage.cluster,
                resources=price.resources if own else "",
                hourly_usd=price.hourly_usd,
                minutes=round(minutes, 4),
                from_run=history.run_id if history and seconds is not None else "",
                usd=usd,
                note=price.note,
            )
        )
    return lines, total_of(lines)
