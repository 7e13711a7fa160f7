"""Checkouts: exactly the asked commit, fresh directory, tokens never in URLs or messages."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.gitcheckout import CheckoutError, checkout, default_branch, redact


def _head(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_checks_out_the_exact_commit_even_after_the_branch_moved(
    git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = git_repo({"f.txt": "one"})
    first = _head(repo)
    git_repo({"f.txt": "two"})
    dest = tmp_path / "co"
    assert await checkout(str(repo), "main", first, dest) == first
    assert (dest / "f.txt").read_text() == "one"
    # Again into the same place: replaced, not merged.
    (dest / "stray").write_text("x")
    assert await checkout(str(repo), "main", "", dest) == _head(repo)
    assert (dest / "f.txt").read_text() == "two"
    assert not (dest / "stray").exists()


async def test_unknown_commit_is_a_user_error(
    git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = git_repo({"f.txt": "one"})
    with pytest.raises(CheckoutError) as err:
        await checkout(str(repo), "main", "0" * 40, tmp_path / "co")
    assert err.value.user_error
    with pytest.raises(CheckoutError, match="ref nope"):
        await checkout(str(repo), "nope", "", tmp_path / "co")


async def test_missing_repository_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(CheckoutError, match="does not exist") as err:
        await checkout(str(tmp_path / "absent"), "", "", tmp_path / "co")
    assert err.value.user_error


async def test_plain_directory_is_copied_without_git_metadata(tmp_path: Path) -> None:
    src = tmp_path / "plain"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "task.yaml").write_text("run: echo hi\n")
    (src / ".skyrun").mkdir()
    assert await checkout(str(src), "", "", tmp_path / "co") == "local"
    assert (tmp_path / "co" / "sub" / "task.yaml").exists()
    assert not (tmp_path / "co" / ".skyrun").exists()


async def test_token_goes_in_a_header_and_never_into_errors(tmp_path: Path) -> None:
    token = "ghs_TOPSECRET123"
    with pytest.raises(CheckoutError) as err:
        # Nothing listens on port 9: git fails, and its message must not carry the token.
        await checkout("http://127.0.0.1:9/acme/repo.git", "main", "", tmp_path / "co", token=token)
    assert token not in str(err.value)
    assert not err.value.user_error
    assert redact(f"x {token} y", token) == "x *** y"


async def test_default_branch_of_a_local_repository(git_repo: Callable[..., Path]) -> None:
    assert await default_branch(str(git_repo({"f": "1"}))) == "main"


@pytest.mark.parametrize(
    ("ref", "commit", "field"),
    [
        ("main", "--upload-pack=touch {marker}", "commit"),
        ("--upload-pack=touch {marker}", "", "ref"),
        ("-x", "", "ref"),
        ("main\x00evil", "", "ref"),
        ("a..b", "", "ref"),
        ("main", "HEAD", "commit"),
        ("-x", "HEAD", "commit"),
    ],
)
async def test_hostile_values_are_refused_and_nothing_runs(
    git_repo: Callable[..., Path], tmp_path: Path, ref: str, commit: str, field: str
) -> None:
    marker = tmp_path / "pwned"
    repo = git_repo({"f.txt": "one"})
    dest = tmp_path / "co"
    with pytest.raises(CheckoutError) as err:
        await checkout(str(repo), ref.format(marker=marker), commit.format(marker=marker), dest)
    assert err.value.user_error
    assert f"check the run's {field}" in str(err.value)
    assert "nothing was fetched" in str(err.value)
    assert not marker.exists()
    assert not dest.exists()


async def test_a_url_that_looks_like_an_option_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    url = f"--upload-pack=touch {marker}"
    with pytest.raises(CheckoutError, match="starts with '-'") as err:
        await checkout(url, "main", "", tmp_path / "co")
    assert err.value.user_error
    assert await default_branch(url) == ""
    assert not marker.exists()


async def test_git_messages_are_bounded_and_name_what_was_missing(
    git_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = git_repo({"f.txt": "one"})
    with pytest.raises(CheckoutError) as err:
        await checkout(str(repo), "b" * 250, "", tmp_path / "co")
    message = str(err.value)
    assert message.startswith("could not find ref 'bbbb")
    assert len(message) < 1000
    with pytest.raises(CheckoutError) as err:
        await checkout(str(repo), "main", "1" * 40, tmp_path / "co")
    assert "(the run's commit)" in str(err.value)
