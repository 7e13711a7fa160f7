"""The local backend's sandbox: the bubblewrap (`bwrap`) command line that a job runs under.

A sandboxed job gets its own user, PID, mount, IPC and UTS namespaces, as a non-root uid with no
capabilities, and a root filesystem built from nothing:

- read-only: the system directories (/usr, /etc, /opt, ... with /etc's entries that are not
  world-readable hidden), and the directories of the interpreters on the worker's PATH
  (`~/.pyenv`, a venv), so `python3` keeps working;
- writable: the job's cluster directory, its lane's bucket and scratch directories, and the host
  paths the operator opened with SKYRUN_LOCAL_MOUNTS (`:rw`);
- absent or empty: everything else, and explicitly what the worker must keep to itself when it
  lies under a read-only directory (SKYRUN_DATA_DIR, the log store, `.env`, key files, the
  worker's ~/.ssh, ~/.sky, ~/.config, ...);
- its own /proc (no other process of the machine is visible), /dev and an empty environment
  (`--clearenv`) with only the variables the backend gives.

The network is shared with the machine. The arguments go to bwrap through a memfd (`--args`),
so the job's environment never shows on a command line another user could read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from worker.backends.base import TaskSpecError

SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_HOSTNAME = "skyrun-sandbox"
PROBE_TIMEOUT_S = 10.0

BWRAP_MISSING = (
    "the local backend runs every job in a bubblewrap sandbox, but `bwrap` is not installed: "
    "install it (`apt-get install bubblewrap`, or `make` / .ci/run do it), or set "
    "SKYRUN_LOCAL_SANDBOX=off to run jobs unsandboxed (they can then read the worker's secrets)"
)
BWRAP_FAILED = (
    "the local backend runs every job in a bubblewrap sandbox, but the sandbox does not start "
    "({error}): enable unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`; "
    "on Ubuntu 24.04 also `sysctl kernel.apparmor_restrict_unprivileged_userns=0`; in a "
    "container, allow user namespaces, e.g. seccomp/AppArmor unconfined), or set "
    "SKYRUN_LOCAL_SANDBOX=off to run jobs unsandboxed (they can then read the worker's secrets)"
)

# Directories of the system, bound read-only (a symlink such as /bin -> usr/bin stays a symlink).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Under /etc, what a job needs even when it points elsewhere (resolv.conf -> /run/...).
_ETC_LINKS = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/localtime")
# What a worker's HOME holds that no job may read (cloud and git credentials, SkyPilot state).
HOME_SECRETS = (
    ".sky",
    ".ssh",
    ".config",
    ".aws",
    ".azure",
    ".kube",
    ".gnupg",
    ".docker",
    ".oci",
    ".lambda_cloud",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".local/share/keyrings",
)
# A PATH entry named like this is the bin directory of an installation: bind the installation.
_BIN_NAMES = frozenset({"bin", "sbin", "shims"})


class SandboxUnavailable(TaskSpecError):
    """The sandbox cannot start on this machine; the message says why and how to fix it.

    Not retried (a TaskSpecError): the run fails at once with the message, where it was asked.
    """


@dataclass(frozen=True)
class HostMount:
    """A host path the operator opened to every job (SKYRUN_LOCAL_MOUNTS)."""

    path: Path
    writable: bool = False


@dataclass(frozen=True)
class Sandbox:
    """Builds bwrap command lines; the part that is the same for every job is computed once."""

    bwrap: str
    hidden: tuple[Path, ...] = ()
    """Paths no job may read, hidden where they lie under a read-only directory."""
    mounts: tuple[HostMount, ...] = ()
    path_env: str = field(default_factory=lambda: os.environ.get("PATH", os.defpath))
    home: Path = field(default_factory=Path.home)
    _head: list[str] = field(default_factory=list, compare=False, repr=False)
    _tail: list[str] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        head, tail = self._build_static()
        self._head.extend(head)
        self._tail.extend(tail)

    def args(
        self,
        *,
        writable: Sequence[tuple[Path, Path]],
        cwd: Path,
        env: Mapping[str, str],
        tmp: Path | None = None,
    ) -> list[str]:
        """The arguments (for `--args`) of one job: namespaces, filesystem, cwd, environment.

        `writable` holds (host path, path in the sandbox) pairs, bound read-write; `tmp` is the
        host directory that is the job's /tmp (default: an empty tmpfs).
        """
        out = list(self._head)
        # /tmp before the rest: what lies under the host's /tmp is bound over it, not hidden.
        out += ["--tmpfs", "/tmp"] if tmp is None else ["--bind", str(tmp), "/tmp"]
        out += self._tail
        for source, dest in writable:
            out += ["--bind", str(source), str(dest)]
        for mount in self.mounts:
            out += ["--bind" if mount.writable else "--ro-bind", str(mount.path), str(mount.path)]
        out += ["--chdir", str(cwd), "--clearenv"]
        for key, value in env.items():
            out += ["--setenv", key, value]
        return out

    def command(self, args_fd: int, argv: Sequence[str]) -> list[str]:
        """The command line: bwrap reading its arguments from `args_fd`, then the job's argv."""
        return [self.bwrap, "--args", str(args_fd), "--", *argv]

    def probe(self) -> None:
        """Start `true` in a sandbox like a job's; raise SandboxUnavailable if that fails."""
        with args_file(self.args(writable=(), cwd=Path("/"), env={})) as fd:
            try:
                done = subprocess.run(
                    self.command(fd, ["true"]),
                    pass_fds=(fd,),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=PROBE_TIMEOUT_S,
                    env={},
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                raise SandboxUnavailable(BWRAP_FAILED.format(error=error)) from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
            raise SandboxUnavailable(BWRAP_FAILED.format(error=said[:500]))

    def _build_static(self) -> tuple[list[str], list[str]]:
        head = [
            "--unshare-user",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_GID),
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            SANDBOX_HOSTNAME,
            "--die-with-parent",
            "--cap-drop",
            "ALL",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
        ]
        out: list[str] = []
        readonly: list[Path] = []
        for name in SYSTEM_DIRS:
            path = Path(name)
            if path.is_symlink():
                out += ["--symlink", os.readlink(path), name]
            elif path.is_dir():
                out += ["--ro-bind", name, name]
                readonly.append(path)
        for link in _ETC_LINKS:
            target = Path(link)
            if target.is_symlink() and target.exists():
                real = target.resolve()
                if not _under_any(real, readonly):
                    out += ["--ro-bind", str(real), str(real)]
                    readonly.append(real)
        for prefix in interpreter_dirs(self.path_env, self.home, readonly):
            out += ["--ro-bind", str(prefix), str(prefix)]
            readonly.append(prefix)
        out += ["--tmpfs", "/var/tmp", "--tmpfs", "/run"]
        hide = set(not_world_readable(Path("/etc")))
        home = self.home
        hide.update(home / name for name in HOME_SECRETS)
        hide.update(self.hidden)
        for path in sorted(hide):
            out += _hide(path, readonly)
        return head, out


def interpreter_dirs(path_env: str, home: Path, bound: Sequence[Path]) -> list[Path]:
    """Directories to bind read-only so the programs on PATH run inside the sandbox.

    A PATH entry named bin, sbin or shims stands for its installation (~/.pyenv, a venv,
    /usr/local): the parent is bound, unless that is HOME or `/`. A symlink in such a directory
    (a venv's python) brings the installation it points into.
    """
    found: list[Path] = []
    home_real = _real(home)
    for entry in path_env.split(os.pathsep):
        if not entry or not os.path.isabs(entry) or not os.path.isdir(entry):
            continue
        real = _real(Path(entry))
        if _under_any(real, bound):
            continue
        prefix = real
        if real.name in _BIN_NAMES and real.parent not in (home_real, Path("/")):
            prefix = real.parent
        found.append(prefix)
        with contextlib.suppress(OSError), os.scandir(real) as entries:
            for item in entries:
                if not item.is_symlink():
                    continue
                target = _real(Path(item.path))
                if target.exists() and not _under_any(target, bound):
                    install = target.parent
                    if install.name in _BIN_NAMES and install.parent not in (home_real, Path("/")):
                        install = install.parent
                    found.append(install)
    return _outermost(found)


def not_world_readable(root: Path) -> list[Path]:
    """Entries under `root` others may not read (/etc/shadow, /etc/skyrun/...): hidden too.

    A job runs as the worker's own uid on the host, so it could read what the worker's user or
    group can; what the system keeps from other users stays away from jobs as well.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in list(dirnames):
            path = Path(dirpath, name)
            try:
                mode = path.lstat().st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode) and (mode & 0o005) != 0o005:
                found.append(path)
                dirnames.remove(name)
        for name in filenames:
            path = Path(dirpath, name)
            try:
                mode = path.lstat().st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and not mode & stat.S_IROTH:
                found.append(path)
    return found


@contextlib.contextmanager
def args_file(args: Iterable[str]) -> Iterator[int]:
    """A memfd holding `args` NUL-separated, for `bwrap --args FD`; closed on exit."""
    fd = os.memfd_create("skyrun-sandbox-args", 0)  # not inherited unless passed (pass_fds)
    try:
        data = b"".join(arg.encode("utf-8", "surrogateescape") + b"\0" for arg in args)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


def find_bwrap() -> str:
    """The bwrap executable, or SandboxUnavailable saying how to install it."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(BWRAP_MISSING)
    return path


def _hide(path: Path, readonly: Sequence[Path]) -> list[str]:
    """Arguments hiding `path` if it is reachable in the sandbox (under a read-only bind)."""
    try:
        real = _real(path)
        mode = real.stat().st_mode
    except OSError:
        return []
    if not _under_any(real, readonly):
        return []
    if stat.S_ISDIR(mode):
        return ["--tmpfs", str(real)]
    return ["--ro-bind", "/dev/null", str(real)]


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _under_any(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _outermost(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in sorted(set(paths), key=lambda p: len(p.parts)):
        if not _under_any(path, out):
            out.append(path)
    return out
