"""The log store: each stage's full log as a file under the data dir, outliving its cluster.

It serves only regular files that lie inside it, never through a symlink: names are checked,
the run directory is opened without following symlinks and the log relative to it (`dir_fd`,
`O_NOFOLLOW`), and the opened file's type is checked with `fstat`. The writer creates the run
directory and the log the same way, so nothing planted in the store (a symlink, a FIFO, a hard
link to another file) is ever followed, written through or served.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted as a log must not wait for a writer (no effect on files).
# The writer opens read-write, to read back what it wrote through its own descriptor.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_APPEND_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | (_READ_FLAGS & ~os.O_RDONLY)
FILE_MODE = 0o644
DIR_MODE = 0o755

E_NOT_A_LOG = (
    "the log store holds something other than a log at {path} (a directory?); skyrun cannot "
    "write the stage's log there: remove it and retry the run"
)


class LogNotFound(LookupError):
    """No log of this stage: never written, a bad name, or not a regular file of the store."""

    def __init__(self, message: str, *, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent
        """Nothing is there (yet): a running stage may still create it. False: refused."""


class LogStoreError(Exception):
    """Something other than a log sits where the stage's log belongs and cannot be replaced."""


def _check_names(run_id: str, stage: str) -> None:
    if not _SAFE.match(run_id) or not _SAFE.match(stage) or ".." in run_id + stage:
        raise LogNotFound(f"invalid run or stage name: {run_id!r}/{stage!r}")


@contextlib.contextmanager
def _dir_fd(path: str, flags: int, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        """The store's own directory (its path is the operator's choice: it may be a symlink)."""

    def path(self, run_id: str, stage: str) -> Path:
        """Where a stage's log lives, for messages only: open it with `open_read`/`open_append`."""
        _check_names(run_id, stage)
        return self.root / run_id / f"{stage}.log"

    def open_read(self, run_id: str, stage: str) -> BinaryIO:
        """The stage's log, open for reading; raises LogNotFound for anything but a regular,
        singly linked file inside the store reached without a symlink."""
        _check_names(run_id, stage)
        try:
            with (
                _dir_fd(str(self.root), _DIR_FLAGS & ~os.O_NOFOLLOW) as root,
                _dir_fd(run_id, _DIR_FLAGS, root) as run,
            ):
                fd = os.open(f"{stage}.log", _READ_FLAGS, dir_fd=run)
        except OSError as err:
            message = f"no log for {run_id}/{stage}: {err.strerror}"
            raise LogNotFound(message, absent=err.errno == errno.ENOENT) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                raise LogNotFound(f"{run_id}/{stage}.log is not a regular file of the log store")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def open_append(self, run_id: str, stage: str) -> BinaryIO:
        """The stage's log, open for appending (created 0o644 in a 0o755 run directory).

        A symlink or other non-regular entry found where the run directory or the log should be
        is removed and replaced by a fresh one, never followed; OSError when the disk refuses.
        """
        _check_names(run_id, stage)
        os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)
        try:
            with _dir_fd(str(self.root), _DIR_FLAGS & ~os.O_NOFOLLOW) as root:
                run = _open_run_dir(run_id, root)
                try:
                    fd = _open_log(f"{stage}.log", run)
                finally:
                    os.close(run)
        except LogStoreError as err:
            raise LogStoreError(E_NOT_A_LOG.format(path=self.path(run_id, stage))) from err
        return os.fdopen(fd, "ab")


def _open_run_dir(name: str, root: int) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, DIR_MODE, dir_fd=root)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=root)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    # A symlink (or a file) where the run's directory belongs: replace it, never follow it.
    os.unlink(name, dir_fd=root)
    os.mkdir(name, DIR_MODE, dir_fd=root)
    return os.open(name, _DIR_FLAGS, dir_fd=root)


def _open_log(name: str, run: int) -> int:
    for _ in range(2):
        try:
            fd = os.open(name, _APPEND_FLAGS, FILE_MODE, dir_fd=run)
        except OSError as err:
            if err.errno == errno.EISDIR:
                raise LogStoreError(name) from None
            if err.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            # A symlink (ELOOP) or a FIFO nobody reads (ENXIO): replace it.
            os.unlink(name, dir_fd=run)
            continue
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            os.set_blocking(fd, True)
            return fd
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise LogStoreError(name)
        os.unlink(name, dir_fd=run)
    raise LogStoreError(name)
