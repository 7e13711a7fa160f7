"""deploy/k8s: the base and the example overlay render with kustomize and pass schema validation."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.github.webhook import PATH as WEBHOOK_PATH
from tests.deploy.conftest import DEPLOY, listed_names, tool

K8S = DEPLOY / "k8s"
OVERLAY = K8S / "overlays" / "example"
# The oldest and the newest Kubernetes release kubernetes-validate knows of that we support.
VERSIONS = ("1.30.0", "1.37.0")
SLACK_PATH = "/slack/events"


def render(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return render(OVERLAY)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"].startswith(name):
            return doc
    raise AssertionError(f"no {kind} {name}")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("path", [K8S / "base", OVERLAY], ids=["base", "overlay"])
@pytest.mark.parametrize("version", VERSIONS)
def test_renders_and_validates_strictly(path: Path, version: str, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(render(path)))
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(rendered)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["skyrun-bot", "skyrun-worker"])
def test_deployments_probe_limit_and_run_unprivileged(
    overlay: list[dict[str, Any]], name: str
) -> None:
    deployment = find(overlay, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(main["resources"]["requests"])
    assert {"cpu", "memory"} <= set(main["resources"]["limits"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_workers_get_time_to_stop_their_stages(
    overlay: list[dict[str, Any]], stop_needs_s: float
) -> None:
    deployment = find(overlay, "Deployment", "skyrun-worker")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= stop_needs_s
    env = {e["name"]: e["value"] for e in container(deployment)["env"]}
    port = container(deployment)["ports"][0]["containerPort"]
    assert env["SKYRUN_WORKER_METRICS_PORT"] == str(port)  # where the probes are served


def test_bot_and_workers_share_the_log_store_volume(overlay: list[dict[str, Any]]) -> None:
    config = find(overlay, "ConfigMap", "skyrun-config")["data"]
    claim = find(overlay, "PersistentVolumeClaim", "skyrun-logs")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("skyrun-bot", "skyrun-worker"):
        deployment = find(overlay, "Deployment", name)
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        assert volumes[mounts[config["SKYRUN_LOG_DIR"]]] == claim["metadata"]["name"], name


def test_ingress_sends_the_webhooks_and_run_pages_to_the_bot_service(
    overlay: list[dict[str, Any]],
) -> None:
    ingress = find(overlay, "Ingress", "skyrun")
    service = find(overlay, "Service", "skyrun-bot")
    paths = {
        p["path"]: p["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert {WEBHOOK_PATH, SLACK_PATH, "/runs", "/api", "/static"} <= set(paths)
    assert "/metrics" not in paths and "/healthz" not in paths
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for backend in paths.values():
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in port_names
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]


def test_worker_autoscaling_targets_the_worker_deployment(
    overlay: list[dict[str, Any]],
) -> None:
    hpa = find(overlay, "HorizontalPodAutoscaler", "skyrun-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "skyrun-worker"
    assert hpa["spec"]["minReplicas"] >= 1
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 600


def test_settings_and_secrets_are_named_as_in_env_example(
    overlay: list[dict[str, Any]],
) -> None:
    listed = listed_names()
    config = find(overlay, "ConfigMap", "skyrun-config")
    secret = find(overlay, "Secret", "skyrun-secrets")
    assert set(config["data"]) <= listed
    assert set(secret["data"]) <= listed
    assert all(value == "" for value in secret["data"].values()), "example secrets stay empty"
    for name in ("skyrun-bot", "skyrun-worker"):
        refs = container(find(overlay, "Deployment", name))["envFrom"]
        assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} == {
            config["metadata"]["name"]
        }
        assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} == {
            secret["metadata"]["name"]
        }
