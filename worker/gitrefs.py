"""git's rules for ref names and object names, once (pure): the bot and the checkout use them.

The rules are those of `git check-ref-format` (see its manual), plus what skyrun adds for
values that arrive from outside: a length limit, no leading `-` (git would read an option) and
text that is valid UTF-8 (a lone surrogate cannot reach git, Temporal or a log intact).
"""

from __future__ import annotations

import re

from worker.limits import MAX_REF_CHARS

SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
NULL_SHA = "0" * 40

E_SHA = "{what} {value} is not a commit SHA (40 hexadecimal characters)"
E_REF = "{what} {value} is not a valid git ref name: {problem}"

P_EMPTY = "it is empty"
P_TOO_LONG = "it is {size:,} characters long; the limit is {limit:,}"
P_SURROGATE = "it is not valid UTF-8"
P_CONTROL = "it contains a control character"
P_CHAR = "it contains {char!r}"
P_DASH = "it starts with '-'"
P_DOTDOT = "it contains '..'"
P_AT_BRACE = "it contains '@{'"
P_AT = "it is '@'"
P_SLASHES = "it starts or ends with '/' or contains '//'"
P_DOT_COMPONENT = "a part of it starts with '.'"
P_LOCK = "a part of it ends with '.lock'"
P_DOT_END = "it ends with '.'"

SHORT_PREFIXES = ("refs/heads/", "refs/tags/", "refs/remotes/")
_FORBIDDEN = (" ", "~", "^", ":", "?", "*", "[", "\\")
_SHOWN = 60


def show(value: str, limit: int = _SHOWN) -> str:
    """`value` quoted for a message: control characters and lone surrogates escaped, cut short."""
    cut = value if len(value) <= limit else value[:limit] + "…"
    return repr(cut)


def is_sha(value: str) -> bool:
    return bool(SHA_RE.fullmatch(value))


def sha_problem(value: str, what: str = "commit") -> str | None:
    """Why `value` is not a 40-hex commit SHA, or None when it is."""
    return None if is_sha(value) else E_SHA.format(what=what, value=show(value))


def ref_name_problem(name: str) -> str | None:
    """Which rule of `git check-ref-format` (or of skyrun's additions) `name` breaks, or None.

    `name` may be a short name (`main`, `release/1`) or a full one (`refs/heads/main`), whose
    branch or tag name must then be valid by itself too (`refs/heads/-x` names the branch `-x`).
    """
    for prefix in SHORT_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            problem = _problem(name.removeprefix(prefix))
            if problem:
                return problem
    return _problem(name)


def _problem(name: str) -> str | None:
    if not name:
        return P_EMPTY
    if len(name) > MAX_REF_CHARS:
        return P_TOO_LONG.format(size=len(name), limit=MAX_REF_CHARS)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return P_SURROGATE
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return P_CONTROL
    for char in _FORBIDDEN:
        if char in name:
            return P_CHAR.format(char=char)
    if name.startswith("-"):
        return P_DASH
    if ".." in name:
        return P_DOTDOT
    if "@{" in name:
        return P_AT_BRACE
    if name == "@":
        return P_AT
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return P_SLASHES
    for part in name.split("/"):
        if part.startswith("."):
            return P_DOT_COMPONENT
        if part.endswith(".lock"):
            return P_LOCK
    if name.endswith("."):
        return P_DOT_END
    return None


def ref_problem(name: str, what: str = "branch") -> str | None:
    """The message for a bad ref name (naming `what` it is), or None when it is valid."""
    problem = ref_name_problem(name)
    return None if problem is None else E_REF.format(what=what, value=show(name), problem=problem)
