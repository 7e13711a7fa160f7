"""deploy/systemd: units that systemd accepts, that stop a worker gracefully and restart it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

SYSTEMD = DEPLOY / "systemd"
UNITS = ("skyrun-bot.service", "skyrun-worker@.service", "skyrun-temporal.service")
INSTALL_BIN = "/opt/skyrun/bin/"
ENV_FILE = "/etc/skyrun/skyrun.env"


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Sections → keys → values in order (systemd keys may repeat, unlike INI's)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    """Verified with stand-ins for the installed executables (verify checks they exist)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for exe in ("skyrun", "temporal"):
        (bin_dir / exe).write_text("#!/bin/sh\n")
        (bin_dir / exe).chmod(0o755)
    for name in UNITS:
        text = (SYSTEMD / name).read_text().replace(INSTALL_BIN, f"{bin_dir}/")
        (tmp_path / name).write_text(text)
    instances = [name.replace("@.", "@1.") for name in UNITS]
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{name}" for name in instances)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    # Unknown keys are only warnings: any output is a finding.
    assert proc.returncode == 0 and not proc.stdout and not proc.stderr, proc.stdout + proc.stderr


def test_skyrun_units_read_the_env_file_restart_and_run_unprivileged() -> None:
    for name in ("skyrun-bot.service", "skyrun-worker@.service"):
        service = unit(name)["Service"]
        assert service["User"] == ["skyrun"], name
        assert service["EnvironmentFile"][0] == ENV_FILE, name
        assert service["Restart"] == ["always"], name
        assert service["ExecStart"][0].startswith(INSTALL_BIN + "skyrun "), name


def test_worker_stop_signals_the_worker_alone_and_waits_for_its_stages(
    stop_needs_s: float,
) -> None:
    service = unit("skyrun-worker@.service")["Service"]
    # control-group (the default) would SIGTERM the tasks too: their stage would fail.
    assert service["KillMode"] == ["mixed"]
    assert float(service["TimeoutStopSec"][0]) >= stop_needs_s
