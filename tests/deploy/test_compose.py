"""deploy/compose.yaml: valid per the Compose spec, pinned, healthy, configured only from .env."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, listed_names, tool
from worker.settings import Settings

COMPOSE = DEPLOY / "compose.yaml"
ONE_SHOT = {"temporal-schema", "temporal-create-namespace"}
SKYRUN = {"bot", "worker-1", "worker-2"}
WORKERS = {"worker-1", "worker-2"}
REFERENCE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
SECRET_NAMES = re.compile(r"(SECRET|TOKEN|PASSWORD|PWD|PRIVATE_KEY|API_KEY)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ms|h|m|s)", duration))


def test_valid_against_the_compose_spec_schema() -> None:
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_has_temporal_on_postgres_its_ui_skypilot_a_bot_and_two_workers(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"postgresql", "temporal", "temporal-ui", "skypilot", *SKYRUN} <= set(services)
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["bot"]["command"] == ["bot"]
    for name in WORKERS:
        assert services[name]["command"] == ["worker"]


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        if name in SKYRUN:
            assert "build" in service, name  # our own image, built from deploy/Dockerfile
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"[0-9]+(\.[0-9]+)+", tag), f"{name}: {image}"


def test_every_long_running_service_has_a_healthcheck_and_restarts(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service["restart"].startswith("on-failure"), name
            continue
        assert service["restart"] == "unless-stopped", name
        if name != "temporal-ui":  # its image ships no HTTP client to probe with
            assert service["healthcheck"]["test"], name


def test_bot_and_workers_share_one_log_store_and_workers_keep_their_identity(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in SKYRUN:
        log_dir = services[name]["environment"]["SKYRUN_LOG_DIR"]
        assert f"logs:{log_dir}" in services[name]["volumes"], name
    hostnames = {services[name]["hostname"] for name in WORKERS}
    data = {
        volume
        for name in WORKERS
        for volume in services[name]["volumes"]
        if volume.endswith(":" + services[name]["environment"]["SKYRUN_DATA_DIR"])
    }
    assert len(hostnames) == len(data) == len(WORKERS)


def test_workers_get_time_to_stop_their_stages(
    compose: dict[str, Any], stop_needs_s: float
) -> None:
    for name in WORKERS:
        assert seconds(compose["services"][name]["stop_grace_period"]) >= stop_needs_s


def test_configuration_comes_only_from_the_environment(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    listed = listed_names()
    referenced = set(REFERENCE.findall(text))
    assert referenced <= listed, f"not in .env.example: {sorted(referenced - listed)}"
    settings = {field.alias for field in Settings.model_fields.values()}
    for name in SKYRUN:
        for key in compose["services"][name]["environment"]:
            assert key in listed, f"{name}: {key} is not in .env.example"
            assert key in settings or key == "SKYRUN_LOG_LEVEL", f"{name}: {key} is no setting"
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAMES.search(key):
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
