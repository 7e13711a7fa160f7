"""The log store serves only its own regular files and its writer never follows what it finds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from worker.logstore import LogNotFound, LogStore, LogStoreError


@pytest.fixture
def store(tmp_path: Path) -> LogStore:
    root = tmp_path / "logs"
    root.mkdir()
    return LogStore(root)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the store, holding a file an attacker wants served."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "train.log").write_text("secret of the host\n")
    return path


def test_a_written_log_reads_back(store: LogStore) -> None:
    with store.open_append("run-1", "train") as log:
        log.write(b"epoch 1\n")
    with store.open_append("run-1", "train") as log:
        log.write(b"epoch 2\n")
    with store.open_read("run-1", "train") as log:
        assert log.read() == b"epoch 1\nepoch 2\n"
    info = os.stat(store.root / "run-1" / "train.log")
    assert stat.S_IMODE(info.st_mode) & ~0o644 == 0
    assert stat.S_IMODE(os.stat(store.root / "run-1").st_mode) & ~0o755 == 0


@pytest.mark.parametrize(
    ("run_id", "stage"),
    [("..", "train"), ("run", "../../etc/passwd"), ("", "x"), ("run", ".hidden"), ("a/b", "c")],
)
def test_bad_names_are_not_found(store: LogStore, run_id: str, stage: str) -> None:
    with pytest.raises(LogNotFound):
        store.open_read(run_id, stage)
    with pytest.raises(LogNotFound):
        store.open_append(run_id, stage)


def test_a_symlinked_log_is_not_served(store: LogStore) -> None:
    (store.root / "run").mkdir()
    (store.root / "run" / "train.log").symlink_to("/etc/passwd")
    with pytest.raises(LogNotFound):
        store.open_read("run", "train")


def test_a_symlinked_run_directory_is_not_served(store: LogStore, outside: Path) -> None:
    (store.root / "run").symlink_to(outside)
    with pytest.raises(LogNotFound):
        store.open_read("run", "train")


def test_a_fifo_or_a_directory_in_place_of_a_log_is_not_found_without_waiting(
    store: LogStore,
) -> None:
    (store.root / "run").mkdir()
    os.mkfifo(store.root / "run" / "fifo.log")
    (store.root / "run" / "dir.log").mkdir()
    for stage in ("fifo", "dir"):
        with pytest.raises(LogNotFound):
            store.open_read("run", stage)


def test_a_hard_link_to_another_file_is_not_served(store: LogStore, outside: Path) -> None:
    (store.root / "run").mkdir()
    os.link(outside / "train.log", store.root / "run" / "train.log")
    with pytest.raises(LogNotFound):
        store.open_read("run", "train")


def test_the_writer_replaces_a_planted_symlink_and_never_writes_through_it(
    store: LogStore, outside: Path
) -> None:
    (store.root / "run").mkdir()
    (store.root / "run" / "train.log").symlink_to(outside / "train.log")
    with store.open_append("run", "train") as log:
        log.write(b"ours\n")
    assert (outside / "train.log").read_text() == "secret of the host\n"
    assert not (store.root / "run" / "train.log").is_symlink()
    with store.open_read("run", "train") as log:
        assert log.read() == b"ours\n"


def test_the_writer_replaces_a_symlinked_run_directory(store: LogStore, outside: Path) -> None:
    (store.root / "run").symlink_to(outside)
    with store.open_append("run", "train") as log:
        log.write(b"ours\n")
    assert (outside / "train.log").read_text() == "secret of the host\n"
    assert (store.root / "run").is_dir() and not (store.root / "run").is_symlink()
    with store.open_read("run", "train") as log:
        assert log.read() == b"ours\n"


def test_the_writer_replaces_a_fifo_and_a_hard_link(store: LogStore, outside: Path) -> None:
    (store.root / "run").mkdir()
    os.mkfifo(store.root / "run" / "a.log")
    os.link(outside / "train.log", store.root / "run" / "b.log")
    for stage in ("a", "b"):
        with store.open_append("run", stage) as log:
            log.write(b"ours\n")
        with store.open_read("run", stage) as log:
            assert log.read() == b"ours\n"
    assert (outside / "train.log").read_text() == "secret of the host\n"


def test_a_directory_in_place_of_a_log_is_a_clear_error(store: LogStore) -> None:
    (store.root / "run" / "train.log").mkdir(parents=True)
    with pytest.raises(LogStoreError, match="remove it and retry"):
        store.open_append("run", "train")


def test_a_log_swapped_for_a_symlink_after_opening_keeps_the_writer_on_its_own_file(
    store: LogStore, outside: Path
) -> None:
    path = store.root / "run" / "train.log"
    with store.open_append("run", "train") as log:
        path.unlink()
        path.symlink_to(outside / "train.log")
        log.write(b"ours\n")
    assert (outside / "train.log").read_text() == "secret of the host\n"
    with pytest.raises(LogNotFound):
        store.open_read("run", "train")


def test_a_store_root_behind_a_symlink_is_the_operators_choice(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    store = LogStore(tmp_path / "link")
    with store.open_append("run", "train") as log:
        log.write(b"x\n")
    with store.open_read("run", "train") as log:
        assert log.read() == b"x\n"
