"""Check out exactly one commit of a repository into a fresh directory, without leaking tokens.

Every value that may come from a user (URL, ref, commit) is checked first (refs by git's rules,
commits as 40 hex) and follows `--end-of-options` in every git command, so none is ever read as an
option (`--upload-pack=...` runs a program on a local URL). git's own messages are bounded and
say which value was wrong.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from pathlib import Path

from worker.gitrefs import ref_problem, sha_problem, show
from worker.limits import MAX_ERROR_CHARS, bounded

GIT_FAILED = "git {action} failed for {url}: {detail}"
REF_NOT_FOUND = "could not find {what} in {url}: {detail}"
E_VALUE = "{problem}; nothing was fetched (check the run's {field})"
E_URL = "repository URL {url} starts with '-'; nothing was fetched"
_SAFE_CONFIG = ("-c", "protocol.ext.allow=never")
"""`ext::` URLs run commands; never allow them, whatever the user's git config says."""


class CheckoutError(Exception):
    """The repository or commit cannot be fetched (message is safe to show: tokens redacted)."""

    def __init__(self, message: str, *, user_error: bool) -> None:
        super().__init__(message)
        self.user_error = user_error


def _auth_env(token: str | None) -> dict[str, str]:
    """Pass a token as an HTTP header through git's env config, so it is never in a URL or argv."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    return env


def redact(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
        text = text.replace(base64.b64encode(f"x-access-token:{token}".encode()).decode(), "***")
    return text


async def _git(
    *args: str, cwd: Path | None = None, token: str | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *_SAFE_CONFIG,
        *args,
        cwd=cwd,
        env={**os.environ, **_auth_env(token)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return (
        proc.returncode,
        redact(out.decode(errors="replace"), token),
        bounded(redact(err.decode(errors="replace"), token), MAX_ERROR_CHARS),
    )


def is_local_path(url: str) -> bool:
    return "://" not in url and not url.startswith("git@")


def _is_git_toplevel(path: Path) -> bool:
    return (path / ".git").exists()


async def default_branch(url: str, token: str | None = None) -> str:
    """The branch the remote's HEAD points at (empty if the remote does not say)."""
    if url.startswith("-") or (is_local_path(url) and not _is_git_toplevel(Path(url))):
        return ""
    code, out, _ = await _git("ls-remote", "--symref", "--end-of-options", url, "HEAD", token=token)
    if code != 0:
        return ""
    for line in out.splitlines():
        if line.startswith("ref: refs/heads/"):
            return line.split()[1].removeprefix("refs/heads/")
    return ""


async def checkout(url: str, ref: str, commit: str, dest: Path, token: str | None = None) -> str:
    """Fetch `commit` (or the tip of `ref`, or HEAD) into `dest`, replacing it; return the sha.

    A local directory that is not the top of a git repository is copied as it is (returns
    "local"), so `skyrun run ./my-project` works on a plain folder too. A `commit` that is not 40
    hex, a `ref` git would refuse or a URL that looks like an option is a user error, before any
    git command runs.
    """
    _check_values(url, ref, commit)
    if dest.exists():
        await asyncio.to_thread(shutil.rmtree, dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if is_local_path(url):
        src = Path(url).expanduser()
        if not src.is_dir():
            raise CheckoutError(f"repository path {url} does not exist", user_error=True)
        if not _is_git_toplevel(src):
            await asyncio.to_thread(
                shutil.copytree, src, dest, ignore=shutil.ignore_patterns(".git", ".skyrun")
            )
            return "local"
    dest.mkdir(parents=True)
    code, _, err = await _git("init", "--quiet", "--end-of-options", str(dest))
    if code != 0:
        raise CheckoutError(
            GIT_FAILED.format(action="init", url=url, detail=err.strip()), user_error=False
        )
    want = commit or ref or "HEAD"
    code, _, err = await _git(
        "fetch",
        "--quiet",
        "--depth",
        "1",
        "--no-tags",
        "--end-of-options",
        url,
        want,
        cwd=dest,
        token=token,
    )
    if code != 0:
        detail = err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
        missing = "couldn't find remote ref" in err or "not our ref" in err or "unadvertised" in err
        if missing:
            what = f"commit {commit} (the run's commit)" if commit else f"ref {show(ref or 'HEAD')}"
            raise CheckoutError(
                REF_NOT_FOUND.format(what=what, url=url, detail=detail), user_error=True
            )
        not_repo = "does not appear to be a git repository" in err or "not found" in err.lower()
        raise CheckoutError(
            GIT_FAILED.format(action="fetch", url=url, detail=detail), user_error=not_repo
        )
    # FETCH_HEAD and HEAD are constants, not user values (and `git checkout` reads
    # `--end-of-options` as a path).
    code, _, err = await _git("checkout", "--quiet", "--detach", "FETCH_HEAD", cwd=dest)
    if code != 0:
        raise CheckoutError(
            GIT_FAILED.format(action="checkout", url=url, detail=err.strip()), user_error=False
        )
    code, out, _ = await _git("rev-parse", "--verify", "HEAD", cwd=dest)
    return out.strip()


def _check_values(url: str, ref: str, commit: str) -> None:
    """Refuse values git would misread, naming the field (raises a user CheckoutError)."""
    if url.startswith("-"):
        raise CheckoutError(E_URL.format(url=show(url)), user_error=True)
    problem = sha_problem(commit) if commit else None
    if problem:
        raise CheckoutError(E_VALUE.format(problem=problem, field="commit"), user_error=True)
    # With a commit, git never sees the ref (a fork's `owner:branch` label is only shown).
    problem = ref_problem(ref, what="ref") if ref and not commit else None
    if problem:
        raise CheckoutError(E_VALUE.format(problem=problem, field="ref"), user_error=True)
