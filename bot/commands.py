"""Parsing `/skyrun …` command lines: pure and forge-neutral (PR comments and Slack share it)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from enum import Enum

from worker.limits import (
    MAX_COMMAND_CHARS,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENVS,
    MAX_STAGES,
    too_long,
)
from worker.pipeline import ENV_NAME_RE, NAME_RE

PREFIX = "/skyrun"

COMMENT_USAGE = """\
Usage, on the first line of a pull request comment:

- `/skyrun` runs the pipeline on this pull request's head commit
- `/skyrun STAGE ...` runs only the named stages, e.g. `/skyrun train eval`
- `/skyrun ... KEY=VALUE ...` sets environment variables for the tasks, e.g. `/skyrun EPOCHS=3`
- `/skyrun cancel` cancels this pull request's running run (its clusters are still torn down)
- `/skyrun status` lists this pull request's runs
- `/skyrun help` shows this help

Only people with write access to the repository can start or cancel runs."""

SLASH_USAGE = """\
Usage:
• `/skyrun OWNER/REPO[@REF] [STAGE ...] [KEY=VALUE ...]` runs the pipeline (or the named stages)
• `/skyrun status [RUN]` shows recent runs, or one run
• `/skyrun cancel RUN` cancels a run (its clusters are still torn down)
• `/skyrun help` shows this help"""

E_EMPTY_TARGET = "say which repository to run, as in `/skyrun OWNER/REPO[@REF]`"
E_BAD_TARGET = "{target} is not a repository (expected OWNER/REPO or OWNER/REPO@REF)"
E_QUOTES = "the command has unbalanced quotes"
E_NOT_ARGUMENT = "{word} is neither a stage name nor KEY=VALUE"
E_BAD_ENV_NAME = (
    "{name} is not a valid environment variable name (letters, digits and '_', "
    "not starting with a digit)"
)
E_NO_ARGUMENTS = "`{command}` takes no arguments here (got {extra})"
E_TOO_MANY = "`{command}` takes at most one argument (got {extra})"
E_NEEDS_RUN = "`{command}` needs the run to act on, as in `/skyrun {command} RUN`"
E_TARGET_NOT_HERE = (
    "{word} looks like a repository; on a pull request the repository is the one commented on"
)
E_COMMAND_TOO_LONG = "{detail}: shorten it (set long values in the pipeline file's `envs:`)"
E_ENV_VALUE_CHARS = "the value of {name} contains a NUL character or invalid text"
E_TOO_MANY_ENVS = "{count:,} KEY=VALUE settings were given; the limit is {limit:,}"
E_TOO_MANY_STAGES = "{count:,} stages were named; the limit is {limit:,}"

STAGE_RE = NAME_RE
TARGET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+(?:@\S+)?")
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MAX_QUOTED = 40


class CommandKind(str, Enum):
    RUN = "run"
    CANCEL = "cancel"
    STATUS = "status"
    HELP = "help"


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    stages: tuple[str, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)
    target: str = ""
    """`OWNER/REPO[@REF]` of a slash-command run, or the run id of `status` / `cancel`."""


class CommandError(ValueError):
    """A usage error; the message says what is wrong and never echoes a KEY=VALUE value."""


def _q(word: str) -> str:
    return repr(word if len(word) <= _MAX_QUOTED else word[:_MAX_QUOTED] + "…")


def command_line(text: str) -> str | None:
    """The arguments after `/skyrun` when the text's first line is a command, else None."""
    first = text.lstrip().split("\n", 1)[0].strip()
    if (
        first != PREFIX
        and not first.startswith(PREFIX + " ")
        and not first.startswith(PREFIX + "\t")
    ):
        return None
    return first[len(PREFIX) :].strip()


def parse_comment(text: str) -> Command | None:
    """A pull request comment: None unless its first line starts with `/skyrun`."""
    args = command_line(text)
    return None if args is None else parse_args(args)


def check_length(args: str) -> None:
    """Refuse a command line too long to parse in the request path (before any parsing)."""
    if len(args) > MAX_COMMAND_CHARS:
        detail = too_long("the /skyrun command", len(args), MAX_COMMAND_CHARS)
        raise CommandError(E_COMMAND_TOO_LONG.format(detail=detail))


def check_env(name: str, value: str) -> None:
    """One KEY=VALUE within the limits: a valid name and a bounded, encodable value.

    The message names the key and the limit, never the value (which may be a secret).
    """
    if len(name) > MAX_ENV_NAME_CHARS:
        raise CommandError(too_long(f"the name {_q(name)}", len(name), MAX_ENV_NAME_CHARS))
    if not ENV_NAME_RE.fullmatch(name):
        raise CommandError(E_BAD_ENV_NAME.format(name=_q(name)))
    if len(value) > MAX_ENV_VALUE_CHARS:
        raise CommandError(too_long(f"the value of {name}", len(value), MAX_ENV_VALUE_CHARS))
    if "\x00" in value or not _encodable(value):
        raise CommandError(E_ENV_VALUE_CHARS.format(name=name))


def check_counts(stages: int, envs: int) -> None:
    if envs > MAX_ENVS:
        raise CommandError(E_TOO_MANY_ENVS.format(count=envs, limit=MAX_ENVS))
    if stages > MAX_STAGES:
        raise CommandError(E_TOO_MANY_STAGES.format(count=stages, limit=MAX_STAGES))


def parse_envs(items: list[str]) -> dict[str, str]:
    """`KEY=VALUE` items (later ones win) within the limits of worker/limits.py."""
    envs: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        check_env(name, value)
        envs[name] = value
    check_counts(0, len(envs))
    return envs


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_args(args: str, *, with_target: bool = False) -> Command:
    """Parse what follows `/skyrun`; `with_target` for front doors that name the repo or run.

    Raises CommandError with a message for the person who typed it.
    """
    check_length(args)
    try:
        words = shlex.split(args)
    except ValueError:
        raise CommandError(E_QUOTES) from None
    keyword = words[0].lower() if words else ""
    for kind in (CommandKind.CANCEL, CommandKind.STATUS, CommandKind.HELP):
        if keyword == kind.value:
            return _keyword_command(kind, words[1:], with_target)
    target = ""
    if with_target:
        if not words:
            raise CommandError(E_EMPTY_TARGET)
        target, words = words[0], words[1:]
        if not TARGET_RE.fullmatch(target):
            raise CommandError(E_BAD_TARGET.format(target=_q(target)))
    stages: list[str] = []
    envs: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if sep:
            check_env(name, value)
            envs[name] = value
        elif STAGE_RE.fullmatch(word):
            if word not in stages:
                stages.append(word)
        elif not with_target and TARGET_RE.fullmatch(word):
            raise CommandError(E_TARGET_NOT_HERE.format(word=_q(word)))
        else:
            raise CommandError(E_NOT_ARGUMENT.format(word=_q(word)))
    check_counts(len(stages), len(envs))
    return Command(CommandKind.RUN, stages=tuple(stages), envs=envs, target=target)


def _keyword_command(kind: CommandKind, rest: list[str], with_target: bool) -> Command:
    extra = " ".join(_q(word) for word in rest)
    if kind is CommandKind.HELP or not with_target:
        if rest:
            raise CommandError(E_NO_ARGUMENTS.format(command=kind.value, extra=extra))
        return Command(kind)
    if len(rest) > 1:
        raise CommandError(E_TOO_MANY.format(command=kind.value, extra=extra))
    if not rest and kind is CommandKind.CANCEL:
        raise CommandError(E_NEEDS_RUN.format(command=kind.value))
    if rest and not RUN_ID_RE.fullmatch(rest[0]):
        raise CommandError(E_NOT_ARGUMENT.format(word=_q(rest[0])))
    return Command(kind, target=rest[0] if rest else "")
