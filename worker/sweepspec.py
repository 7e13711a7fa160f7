"""What a sweep is (`/skyrun sweep`, `skyrun run --sweep`): its axes, their cartesian product,
the ids and lanes it derives, and the limit on its size. Pure: the front doors import it.

A sweep is one coordinating workflow (worker/sweep.py) that starts one pipeline run per
combination, each in a lane of its own, and reports one table for all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.contract import RunRequest, RunState, SweepMember, slug

SWEEP_WORKFLOW = "SkyrunSweep"
QUERY_SWEEP = "sweep"
DEFAULT_MAX_SWEEP = 16

E_TOO_LARGE = "this sweep would start {count:,} runs; SKYRUN_MAX_SWEEP is {limit:,}"
E_TOO_LARGE_NEXT = "list fewer values, or sweep in several steps"


@dataclass
class SweepAxis:
    """One swept setting: `KEY=a,b,c`."""

    key: str
    values: list[str]


@dataclass
class SweepRequest:
    """A sweep: `base` is the run every combination starts from (its envs hold the settings
    that are not swept); each combination sets its values over them."""

    base: RunRequest
    axes: list[SweepAxis]


@dataclass
class SweepStatus:
    """What a sweep's query answers and what it returns: its runs, and how far it is."""

    sweep_id: str
    run_ids: list[str]
    state: RunState = RunState.RUNNING
    finished: list[str] = field(default_factory=list)
    """The runs that have closed."""
    error: str = ""
    started_at: str = ""
    finished_at: str = ""


@dataclass
class SweepReportInput:
    request: SweepRequest
    status: SweepStatus
    handles: dict[str, str] = field(default_factory=dict)
    """What earlier reports created (the comment, the Slack message, the baseline)."""


@dataclass
class SweepReportOutput:
    handles: dict[str, str] = field(default_factory=dict)


class SweepTooLarge(ValueError):
    """More combinations than SKYRUN_MAX_SWEEP; the message gives the count and the limit."""


def size(axes: Sequence[SweepAxis]) -> int:
    return math.prod(len(axis.values) for axis in axes) if axes else 0


def size_problem(axes: Sequence[SweepAxis], limit: int) -> str:
    """Why the sweep is too large to start ("" when it is not)."""
    count = size(axes)
    if count > limit:
        return E_TOO_LARGE.format(count=count, limit=limit)
    return ""


def check_size(axes: Sequence[SweepAxis], limit: int) -> None:
    problem = size_problem(axes, limit)
    if problem:
        raise SweepTooLarge(f"{problem}: {E_TOO_LARGE_NEXT}")


def combinations(axes: Sequence[SweepAxis]) -> list[dict[str, str]]:
    """The cartesian product, the first axis varying slowest (the order of the table)."""
    if not axes:
        return []
    keys = [axis.key for axis in axes]
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(axis.values for axis in axes))
    ]


def sweep_id_for(request: SweepRequest) -> str:
    """Derived from what identifies the request (its delivery, Slack request or CLI nonce), so
    a redelivery maps to the same sweep and starts nothing new."""
    base = request.base
    identity = {
        "repo": base.repo,
        "lane": base.lane,
        "delivery": base.delivery_id,
        "commit": base.commit,
        "stages": base.stages,
        "envs": sorted(base.envs.items()),
        "axes": [[axis.key, axis.values] for axis in request.axes],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    name = base.repo.rstrip("/").rsplit("/", 1)[-1]
    return f"{slug(name, 20)}-sweep-{digest}"


def child_id(sweep_id: str, index: int) -> str:
    """The run of combination `index` (0-based) of the sweep; shown 1-based."""
    return f"{sweep_id}-{index + 1}"


def child_lane(lane: str, sweep_id: str, index: int) -> str:
    """Each combination its own lane entry: combinations never supersede each other, nor the
    lane's own runs."""
    return f"{lane}/sweep:{sweep_id}:{index}"


def sweeps_key(lane: str) -> str:
    """The coordinator every sweep of a lane enters, so cancelling the lane reaches them."""
    return f"{lane}/sweeps"


def child_request(request: SweepRequest, sweep_id: str, index: int) -> RunRequest:
    """The run of one combination: the base request with the combination's values as envs."""
    values = combinations(request.axes)[index]
    base = request.base
    return dataclasses.replace(
        base,
        envs={**base.envs, **values},
        lane=child_lane(base.lane, sweep_id, index) if base.lane else "",
        delivery_id=f"{base.delivery_id}#{index + 1}" if base.delivery_id else "",
        sweep=SweepMember(sweep_id, index, dict(values)),
        supersedes=[],
    )


def describe(values: dict[str, str]) -> str:
    """`lr=0.1, bs=32`: how a combination is named on every surface."""
    return ", ".join(f"{key}={value}" for key, value in values.items())
