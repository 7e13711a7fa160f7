"""Run requests made by hand (`skyrun run`, `skyrun dev --example`)."""

from __future__ import annotations

import asyncio
import getpass
import uuid
from pathlib import Path

from worker.contract import DEFAULT_BRANCH, RunRequest, Trigger, lane_for_branch
from worker.gitcheckout import is_local_path

NOT_A_DIRECTORY = "{repo} is neither a git URL nor an existing directory"
UNKNOWN_REF = "{ref} is not a branch, tag or commit of {repo}"


async def _rev_parse(path: Path, ref: str) -> str | None:
    proc = await asyncio.create_subprocess_exec(
        "git",
        "rev-parse",
        "--verify",
        "--quiet",
        f"{ref}^{{commit}}",
        cwd=path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return out.decode().strip() if proc.returncode == 0 else None


async def manual_request(
    repo: str, ref: str, stages: list[str], envs: dict[str, str], user: str | None = None
) -> RunRequest:
    """A CLI run: a local git repository is pinned to the commit `ref` names right now."""
    commit = ""
    if is_local_path(repo):
        path = Path(repo).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(NOT_A_DIRECTORY.format(repo=repo))
        repo = str(path)
        if (path / ".git").exists():
            resolved = await _rev_parse(path, ref or "HEAD")
            if resolved is None:
                raise ValueError(UNKNOWN_REF.format(ref=ref, repo=repo))
            commit = resolved
    return RunRequest(
        repo=repo,
        clone_url=repo,
        ref=ref,
        commit=commit,
        stages=list(stages),
        envs=dict(envs),
        trigger=Trigger.CLI,
        requested_by=user or getpass.getuser(),
        lane=lane_for_branch(repo, ref or DEFAULT_BRANCH),
        delivery_id=f"cli-{uuid.uuid4().hex}",
    )
