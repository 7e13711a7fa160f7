"""Parsing `/skyrun …` command lines: pure and forge-neutral (PR comments and Slack share it)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from enum import Enum

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


def parse_args(args: str, *, with_target: bool = False) -> Command:
    """Parse what follows `/skyrun`; `with_target` for front doors that name the repo or run.

    Raises CommandError with a message for the person who typed it.
    """
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
            if not ENV_NAME_RE.fullmatch(name):
                raise CommandError(E_BAD_ENV_NAME.format(name=_q(name)))
            envs[name] = value
        elif STAGE_RE.fullmatch(word):
            if word not in stages:
                stages.append(word)
        elif not with_target and TARGET_RE.fullmatch(word):
            raise CommandError(E_TARGET_NOT_HERE.format(word=_q(word)))
        else:
            raise CommandError(E_NOT_ARGUMENT.format(word=_q(word)))
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
