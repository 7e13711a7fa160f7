"""git's ref-name rules, checked against `git check-ref-format` itself."""

from __future__ import annotations

import subprocess

import pytest

from worker.gitrefs import (
    P_AT_BRACE,
    P_CONTROL,
    P_DASH,
    P_DOTDOT,
    P_EMPTY,
    P_LOCK,
    P_SURROGATE,
    is_sha,
    ref_name_problem,
    ref_problem,
    sha_problem,
)
from worker.limits import MAX_REF_CHARS

GOOD = ["main", "release/1.2", "feature/x-y_z", "refs/heads/main", "dépôt", "a@b", "v1.0+build"]
BAD = [
    "-x",
    "--upload-pack=touch /tmp/pwned",
    "a..b",
    "a@{1}",
    "@",
    "x.lock",
    "a/.hidden",
    ".hidden",
    "a/",
    "/a",
    "a//b",
    "a.",
    "with space",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[b",
    "a\\b",
    "nul\x00byte",
    "tab\tin",
    "del\x7f",
    "",
]


def git_accepts(name: str) -> bool:
    """What `git check-ref-format --allow-onelevel` says (refs/heads/ prefix for short names)."""
    full = name if name.startswith("refs/") else f"refs/heads/{name}"
    result = subprocess.run(["git", "check-ref-format", full], capture_output=True)
    return result.returncode == 0


@pytest.mark.parametrize("name", GOOD)
def test_names_git_accepts_are_accepted(name: str) -> None:
    assert git_accepts(name)
    assert ref_name_problem(name) is None
    assert ref_problem(name) is None


@pytest.mark.parametrize("name", [n for n in BAD if "\x00" not in n])
def test_names_git_refuses_are_refused(name: str) -> None:
    if not name.startswith("-") and name not in ("", "@"):
        # git itself refuses these ('-x', '' and a bare '@', which git reads as HEAD, are
        # skyrun's own additions).
        assert not git_accepts(name), name
    assert ref_name_problem(name) is not None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", P_EMPTY),
        ("-x", P_DASH),
        ("refs/heads/-x", P_DASH),
        ("refs/tags/--upload-pack=x", P_DASH),
        ("a..b", P_DOTDOT),
        ("a@{u}", P_AT_BRACE),
        ("b.lock", P_LOCK),
        ("nul\x00byte", P_CONTROL),
        ("lone\ud800surrogate", P_SURROGATE),
    ],
)
def test_each_refusal_names_its_rule(name: str, problem: str) -> None:
    assert ref_name_problem(name) == problem


def test_too_long_names_are_refused_with_the_limit() -> None:
    assert ref_name_problem("a" * MAX_REF_CHARS) is None
    problem = ref_name_problem("a" * (MAX_REF_CHARS + 1))
    assert problem is not None and f"{MAX_REF_CHARS:,}" in problem


def test_messages_escape_what_they_show() -> None:
    message = ref_problem("x\x00\ud800" + "y" * 500, what="push.ref")
    assert message is not None and message.startswith("push.ref 'x\\x00\\ud800")
    message.encode("utf-8")  # printable, encodable, short
    assert len(message) < 200


def test_shas_are_forty_hex_characters() -> None:
    assert is_sha("a" * 40) and is_sha("0123456789ABCDEFabcdef0123456789abcdef01")
    for bad in ["a" * 39, "a" * 41, "g" * 40, "--upload-pack=touch /tmp/pwned", "", "a" * 64]:
        assert not is_sha(bad)
        assert sha_problem(bad, "after") is not None
    assert sha_problem("a" * 40) is None
