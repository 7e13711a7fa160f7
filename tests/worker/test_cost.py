"""The price policy (worker/cost.py): SkyPilot's own catalog code reading a catalog the test
puts where SkyPilot keeps them, the SKYRUN_*_HOUR_USD settings, what a task asks for, and the
estimate from a lane's history or the worst case."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from worker.contract import StageEstimate
from worker.cost import (
    BAD_TASK,
    History,
    PlannedCluster,
    Price,
    SettingsPricer,
    estimate,
    requested,
)

ROOT = Path(__file__).resolve().parents[2]
CATALOG_SCHEMA = "v8"
"""sky.skylet.constants.CATALOG_SCHEMA_VERSION of SkyPilot 0.14.1 (checked in the child)."""
LAMBDA_VMS = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice
gpu_1x_a100,A100,1.0,30.0,200.0,1.29,us-east-1,,
gpu_1x_a100,A100,1.0,30.0,200.0,1.49,us-west-1,,
gpu_8x_a100,A100,8.0,124.0,1800.0,10.32,us-east-1,,
gpu_1x_a10,A10,1.0,30.0,200.0,0.75,us-east-1,,
cpu_4x,,,4.0,16.0,0.10,us-east-1,,
"""
CHILD = """\
import json, sys
from dataclasses import asdict
from sky.skylet import constants
from worker.cost import SkyPilotPricer

assert constants.CATALOG_SCHEMA_VERSION == sys.argv[1], constants.CATALOG_SCHEMA_VERSION
pricer = SkyPilotPricer(2.0, 0.25, enabled_clouds=lambda: ["lambda"])
tasks = json.loads(sys.argv[2])
print(json.dumps([asdict(pricer.price_blocking(task, {"N": "8"})) for task in tasks]))
"""


def price_with_skypilot(runtime: Path, tasks: list[str]) -> list[dict[str, Any]]:
    """Price `tasks` in a fresh interpreter whose SkyPilot keeps its state under `runtime`
    (SKY_RUNTIME_DIR: SkyPilot fixes the catalog directory when it is first imported)."""
    env = {**os.environ, "SKY_RUNTIME_DIR": str(runtime), "HOME": str(runtime)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, CATALOG_SCHEMA, json.dumps(tasks)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_skypilot_backend_prices_from_skypilots_catalog_with_skypilots_own_code(
    tmp_path: Path,
) -> None:
    catalogs = tmp_path / ".sky" / "catalogs" / CATALOG_SCHEMA
    vms = catalogs / "lambda" / "vms.csv"
    vms.parent.mkdir(parents=True)
    vms.write_text(LAMBDA_VMS)
    # Older than Lambda's pull frequency (7 h), and changed since SkyPilot's last pull (its md5
    # differs): SkyPilot keeps a catalog edited by hand and never fetches over it.
    meta = catalogs / ".meta" / "lambda" / "vms.csv.md5"
    meta.parent.mkdir(parents=True)
    meta.write_text(hashlib.md5(b"what SkyPilot last downloaded").hexdigest())
    old = time.time() - 8 * 3600
    os.utime(vms, (old, old))

    prices = price_with_skypilot(
        tmp_path,
        [
            "resources: {infra: lambda, accelerators: 'A100:1'}\nrun: train\n",
            "resources: {accelerators: 'A10:1'}\nrun: train\n",  # no cloud: the enabled ones
            "resources: {infra: lambda, accelerators: {A100: 8}}\nrun: train\n",
            "num_nodes: 2\nresources: {infra: lambda, accelerators: 'A100:1'}\nrun: train\n",
            "resources: {infra: kubernetes, accelerators: 'H100:2', cpus: 8}\nrun: train\n",
            "resources: {infra: lambda, accelerators: 'H100:1'}\nrun: train\n",
        ],
    )

    assert prices[0] == {
        "hourly_usd": 1.29,  # the cheapest region's price
        "resources": "1\u00d7 A100 (lambda gpu_1x_a100, us-east-1)",
        "note": "",
    }
    assert prices[1]["hourly_usd"] == 0.75, prices[1]
    assert "gpu_1x_a10," in prices[1]["resources"]
    assert prices[2]["hourly_usd"] == 10.32
    assert prices[3]["hourly_usd"] == pytest.approx(2 * 1.29)
    assert prices[4] == {  # no catalog: SKYRUN_GPU_HOUR_USD x 2 + SKYRUN_CPU_HOUR_USD x 8
        "hourly_usd": 2 * 2.0 + 8 * 0.25,
        "resources": "2\u00d7 H100, 8 CPUs on kubernetes",
        "note": "",
    }
    assert prices[5]["hourly_usd"] is None
    assert "no enabled cloud offers" in prices[5]["note"] and "H100" in prices[5]["note"]
    # SkyPilot read the file where it was, as it was: no fetch, not even a touch.
    assert vms.read_text() == LAMBDA_VMS
    assert os.stat(vms).st_mtime == pytest.approx(old)


async def test_settings_price_gpus_and_cpus_the_task_asks_for() -> None:
    pricer = SettingsPricer(gpu_hour_usd=2.5, cpu_hour_usd=0.1, where="local")

    gpu = await pricer.price("resources: {accelerators: 'A100:2', cpus: 4+}\nrun: x\n", {})
    assert gpu == Price(2 * 2.5 + 4 * 0.1, "2\u00d7 A100, 4 CPUs on local")
    cpu_only = await pricer.price("run: x\n", {})
    assert cpu_only == Price(0.1, "1 CPU on local")  # a task asking for nothing: one CPU
    nodes = await pricer.price("num_nodes: 3\nresources: {cpus: 2}\nrun: x\n", {})
    assert nodes.hourly_usd == pytest.approx(3 * 2 * 0.1)
    broken = await pricer.price("resources: [\n", {})
    assert broken.hourly_usd is None and broken.note.startswith(BAD_TASK.split("{")[0])
    free = await SettingsPricer(0, 0).price("resources: {accelerators: H100:8}\n", {})
    assert free.hourly_usd == 0


@pytest.mark.parametrize(
    ("yaml_text", "accelerators", "cpus", "infra", "nodes"),
    [
        ("resources: {accelerators: A100}\n", {"A100": 1}, None, "", 1),
        ("resources: {accelerators: {V100: 4}, cpus: 8}\n", {"V100": 4}, 8, "", 1),
        (
            "resources: {accelerators: [L4:1, A10G:1], infra: aws/us-east-1}\n",
            {"L4": 1},
            None,
            "aws",
            1,
        ),
        ("resources: {any_of: [{accelerators: T4:2, cloud: gcp}]}\n", {"T4": 2}, None, "gcp", 1),
        ("resources: {cpus: nonsense}\nnum_nodes: true\n", {}, None, "", 1),
        ("num_nodes: 4\n", {}, None, "", 4),
        ("- a list\n", {}, None, "", 1),
    ],
)
def test_what_a_task_asks_for(
    yaml_text: str, accelerators: dict[str, float], cpus: float | None, infra: str, nodes: int
) -> None:
    asked = requested(yaml_text)
    assert (dict(asked.accelerators), asked.cpus, asked.infra, asked.num_nodes) == (
        accelerators,
        cpus,
        infra,
        nodes,
    )


class FixedPricer:
    def __init__(self, prices: dict[str, Price]) -> None:
        self.prices = prices
        self.asked: list[str] = []

    async def price(self, task_yaml: str, envs: dict[str, str]) -> Price:
        self.asked.append(task_yaml)
        return self.prices[task_yaml]


def planned(stage: str, cluster: str, launch: bool) -> PlannedCluster:
    return PlannedCluster(stage, cluster, launch, f"{stage}.yaml", {})


async def test_estimate_from_the_lanes_durations_else_the_worst_case_one_price_a_cluster() -> None:
    pricer = FixedPricer(
        {"train.yaml": Price(3.0, "1\u00d7 A100"), "prep.yaml": Price(0.6, "2 CPUs")}
    )
    stages = [
        planned("prep", "prep", True),
        planned("train", "train", True),
        planned("eval", "train", False),
    ]
    history = History("run-1", {"prep": 120.0, "train": 3300.0})

    lines, total = await estimate(stages, pricer, history, timeout_minutes=180)

    assert pricer.asked == ["prep.yaml", "train.yaml"]  # eval runs on train's cluster
    assert lines == [
        StageEstimate("prep", "prep", "2 CPUs", 0.6, 2.0, "run-1", 0.02, ""),
        StageEstimate("train", "train", "1\u00d7 A100", 3.0, 55.0, "run-1", 2.75, ""),
        # A stage the last run did not have: the worst case.
        StageEstimate("eval", "train", "", 3.0, 180.0, "", 9.0, ""),
    ]
    assert total == pytest.approx(11.77)


async def test_an_unknown_price_makes_the_estimate_unknown() -> None:
    pricer = FixedPricer({"a.yaml": Price(1.0, "1 CPU"), "b.yaml": Price(None, note="no catalog")})
    lines, total = await estimate(
        [planned("a", "a", True), planned("b", "b", True)], pricer, None, timeout_minutes=30
    )
    assert total is None
    assert lines[1].usd is None and lines[1].note == "no catalog"
    assert lines[0].usd == 0.5
