"""The `/skyrun` command: one parser for PR comments and Slack slash commands, its usage texts,
and which repositories skyrun acts for (pure).

The host is a parameter (as Atlantis' `Parse(comment, vcsHost)`): on a pull request the
repository and the run are the ones commented on, so `status` and `cancel` take no arguments and
a run names only stages and KEY=VALUE; a slash command names `OWNER/REPO[@REF]` to run, or the run
to act on. Everything else (keywords, stages, KEY=VALUE, limits, error texts) is shared. Lengths
are checked before anything is split, and no error ever echoes a KEY=VALUE value.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from fnmatch import fnmatchcase

from worker.gitrefs import ref_name_problem
from worker.limits import (
    MAX_COMMAND_CHARS,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENVS,
    MAX_STAGES,
    too_long,
)
from worker.links import REPO_RE
from worker.pipeline import ENV_NAME_RE, NAME_RE
from worker.sweepspec import SweepAxis

PREFIX = "/skyrun"

COMMENT_USAGE = """\
Usage, on the first line of a pull request comment:

- `/skyrun` runs the pipeline on this pull request's head commit
- `/skyrun STAGE ...` runs only the named stages, e.g. `/skyrun train eval`
- `/skyrun ... KEY=VALUE ...` sets environment variables for the tasks, e.g. `/skyrun EPOCHS=3`
- `/skyrun sweep [STAGE ...] KEY=a,b [KEY=c,d ...]` starts one run per combination of the \
comma-separated values and posts one table of their results, \
e.g. `/skyrun sweep LR=0.01,0.1 BS=32,64`
- `/skyrun cancel` cancels this pull request's running run (its clusters are still torn down)
- `/skyrun retry` retries this pull request's latest failed or cancelled run from its failed \
stage (same commit and values; stages that succeeded are reused)
- `/skyrun status` lists this pull request's runs
- `/skyrun approve` lets this pull request's run waiting for budget approval go (maintainers)
- `/skyrun help` shows this help

Only people with write access to the repository can start or cancel runs."""

SLASH_USAGE = """\
*Usage*
• `{command} OWNER/REPO[@REF] [STAGE ...] [KEY=VALUE ...]` run a repository's pipeline (or \
only the named stages) on the tip of REF (default: its default branch), \
e.g. `{command} acme/models@main train LR=0.01`
• `{command} sweep OWNER/REPO[@REF] [STAGE ...] KEY=a,b [KEY=c,d ...]` one run per combination \
of the comma-separated values, one message with a table of their results
• `{command} status [RUN]` the state of a run, or the latest runs
• `{command} cancel RUN` cancel a run; every cluster it launched is torn down
• `{command} retry RUN` retry a failed or cancelled run from its failed stage (same commit and \
values; stages that succeeded are reused)
• `{command} help` this text"""
"""Slack mrkdwn; `{command}` is the slash command's name as the workspace installed it."""

E_EMPTY_TARGET = "say which repository to run, as in `{command} OWNER/REPO[@REF]`"
E_BAD_TARGET = (
    "{word} is neither a command (status, cancel, retry, help) nor a repository as OWNER/REPO[@REF]"
)
E_BAD_REF = "{ref} is not a branch, tag or commit name: {problem}"
E_QUOTES = "the command has unbalanced quotes"
E_NOT_ARGUMENT = "{word} is neither a stage name nor KEY=VALUE"
E_BAD_ENV_NAME = (
    "{name} is not a valid environment variable name (letters, digits and '_', "
    "not starting with a digit)"
)
E_NO_ARGUMENTS = "`{command}` takes no arguments here (got {extra})"
E_TOO_MANY = "`{command}` takes at most one argument (got {extra})"
E_NEEDS_RUN = "`{command}` needs the run to act on, as in `{name} {command} RUN`"
E_BAD_RUN_ID = "{word} is not a run id (run ids look like `widgets-1a2b3c4d5e`)"
E_TARGET_NOT_HERE = (
    "{word} looks like a repository; on a pull request the repository is the one commented on"
)
E_COMMAND_TOO_LONG = "{detail}: shorten it (set long values in the pipeline file's `envs:`)"
E_ENV_VALUE_CHARS = "the value of {name} contains a NUL character or invalid text"
E_TOO_MANY_ENVS = "{count:,} KEY=VALUE settings were given; the limit is {limit:,}"
E_TOO_MANY_STAGES = "{count:,} stages were named; the limit is {limit:,}"

# Sweeps: `KEY=a,b` lists, split on commas only.
E_SWEEP_EMPTY_VALUE = (
    "{name} lists an empty value: write {name}=a,b with one value between every two commas"
)
E_SWEEP_DUPLICATE_KEY = "{name} is swept twice: list all its values once, as {name}=a,b"
E_SWEEP_DUPLICATE_VALUE = "{name} lists the same value twice"
E_SWEEP_NOTHING = (
    "a sweep needs at least one KEY=a,b with two or more comma-separated values, e.g. `{example}`"
)
SWEEP_EXAMPLE = {
    "comment": "/skyrun sweep LR=0.01,0.1",
    "slash": "{command} sweep OWNER/REPO LR=0.01,0.1",
}

RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""A run id as skyrun makes them (a Temporal workflow id): never a path or an option."""
_RUN_PAGE = "/runs/"
_MAX_QUOTED = 40
# Slack turns quotes typographic, escapes &, < and >, and wraps URLs as <url|label>.
_SLACK_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
_SLACK_LINK = re.compile(r"<([^|>]+)(?:\|[^>]*)?>")


class Host(str, Enum):
    """Where the command was typed, which decides what it names."""

    COMMENT = "comment"
    """A pull request comment: the repository and runs are the pull request's."""
    SLASH = "slash"
    """A Slack slash command: it names `OWNER/REPO[@REF]` to run, or the run to act on."""


class CommandKind(str, Enum):
    """What a `/skyrun` command asks for. The values travel in workflow inputs
    (GitHubCommand.action): never change one, so running workflows still decode."""

    RUN = "run"
    CANCEL = "cancel"
    STATUS = "status"
    HELP = "help"
    APPROVE = "approve"
    """Budgets (issue 14): let a run that waits for approval go (maintain or admin)."""
    USAGE = "usage"
    SWEEP = "sweep"
    """One run per combination of `KEY=a,b` values (worker/sweep.py)."""
    """The text was a `/skyrun` command the parser refused: reply with the error and usage."""
    RETRY = "retry"
    """Retry a failed run from its failed stage (worker/retry.py)."""


KEYWORDS = (
    CommandKind.CANCEL,
    CommandKind.STATUS,
    CommandKind.HELP,
    CommandKind.RETRY,
    CommandKind.APPROVE,
)
NEEDS_RUN = (
    CommandKind.CANCEL,
    CommandKind.RETRY,
    CommandKind.APPROVE,
)
"""Slash commands that act on one run, which they must name."""


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    stages: tuple[str, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)
    repo: str = ""
    """Slash form: the `OWNER/REPO` to run (without a `.git` suffix)."""
    ref: str = ""
    """Slash form: the branch, tag or commit after `@`; empty for the default branch."""
    run_id: str = ""
    """Slash form: the run `status` or `cancel` acts on; empty for `status` of the latest runs."""
    sweep: tuple[SweepAxis, ...] = ()
    """A sweep: the swept settings (`KEY=a,b`), in the order typed; `envs` stays empty."""

    @property
    def target(self) -> str:
        """`OWNER/REPO[@REF]` as typed (without `.git`)."""
        return f"{self.repo}@{self.ref}" if self.ref else self.repo


class CommandError(ValueError):
    """A usage error; the message says what is wrong and never echoes a KEY=VALUE value."""


def usage(host: Host, command: str = PREFIX) -> str:
    """The usage text for `host`; `command` is the slash command's name."""
    return COMMENT_USAGE if host is Host.COMMENT else SLASH_USAGE.format(command=command)


def repo_allowed(repo: str, patterns: Sequence[str]) -> bool:
    """Whether `OWNER/REPO` matches one of SKYRUN_ALLOWED_REPOS (GitHub names ignore case)."""
    name = repo.lower()
    return any(fnmatchcase(name, pattern.lower()) for pattern in patterns)


def quoted(word: str) -> str:
    """A word from the command as messages show it: quoted, escaped and cut."""
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
    return None if args is None else parse(args, Host.COMMENT)


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
        raise CommandError(too_long(f"the name {quoted(name)}", len(name), MAX_ENV_NAME_CHARS))
    if not ENV_NAME_RE.fullmatch(name):
        raise CommandError(E_BAD_ENV_NAME.format(name=quoted(name)))
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


def _slack_text(text: str) -> str:
    """Undo what Slack does to command text: links become their URL, quotes plain, & < > raw."""
    return (
        _SLACK_LINK.sub(r"\1", text)
        .translate(_SLACK_QUOTES)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )


def words(args: str, host: Host) -> list[str]:
    """Split like a shell, once the length is known to be bounded."""
    check_length(args)
    if host is Host.SLASH:
        args = _slack_text(args)
    try:
        return shlex.split(args)
    except ValueError:
        raise CommandError(E_QUOTES) from None


def parse(args: str, host: Host, *, command: str = PREFIX) -> Command:
    """Parse what follows `/skyrun` (`command` names it in messages, as Slack installed it).

    Raises CommandError with a message for the person who typed it.
    """
    split = words(args, host)
    keyword = split[0].lower() if split else ""
    for kind in KEYWORDS:
        if keyword == kind.value:
            return _keyword_command(kind, split[1:], host, command)
    sweep = keyword == CommandKind.SWEEP.value
    if sweep:
        split = split[1:]
    repo = ref = ""
    if host is Host.SLASH:
        if not split:
            raise CommandError(E_EMPTY_TARGET.format(command=command))
        repo, ref = _target(split[0])
        split = split[1:]
    stages: list[str] = []
    envs: dict[str, str] = {}
    axes: list[SweepAxis] = []
    for word in split:
        name, sep, value = word.partition("=")
        if sep and sweep:
            axes.append(_axis(name, value, axes))
        elif sep:
            check_env(name, value)
            envs[name] = value
        elif NAME_RE.fullmatch(word):
            if word not in stages:
                stages.append(word)
        elif host is Host.COMMENT and _looks_like_target(word):
            raise CommandError(E_TARGET_NOT_HERE.format(word=quoted(word)))
        else:
            raise CommandError(E_NOT_ARGUMENT.format(word=quoted(word)))
    check_counts(len(stages), len(envs) + len(axes))
    if sweep:
        if not any(len(axis.values) > 1 for axis in axes):
            example = SWEEP_EXAMPLE[host.value].format(command=command)
            raise CommandError(E_SWEEP_NOTHING.format(example=example))
        return Command(
            CommandKind.SWEEP, stages=tuple(stages), repo=repo, ref=ref, sweep=tuple(axes)
        )
    return Command(CommandKind.RUN, stages=tuple(stages), envs=envs, repo=repo, ref=ref)


def parse_sweep(items: Sequence[str], example: str) -> list[SweepAxis]:
    """`KEY=a,b` items as given on the command line (`skyrun run --sweep`), checked as
    `/skyrun sweep` checks them; `example` shows a good one in the error."""
    axes: list[SweepAxis] = []
    for item in items:
        name, _, text = item.partition("=")
        axes.append(_axis(name, text, axes))
    check_counts(0, len(axes))
    if not any(len(axis.values) > 1 for axis in axes):
        raise CommandError(E_SWEEP_NOTHING.format(example=example))
    return axes


def _axis(name: str, text: str, earlier: Sequence[SweepAxis]) -> SweepAxis:
    """One `KEY=a,b,c` of a sweep: split on commas only, each value within the limits of a
    KEY=VALUE; no empty value, no key or value twice (errors never echo a value)."""
    check_env(name, "")
    if any(axis.key == name for axis in earlier):
        raise CommandError(E_SWEEP_DUPLICATE_KEY.format(name=name))
    values = text.split(",")
    for value in values:
        if not value:
            raise CommandError(E_SWEEP_EMPTY_VALUE.format(name=name))
        check_env(name, value)
    if len(set(values)) != len(values):
        raise CommandError(E_SWEEP_DUPLICATE_VALUE.format(name=name))
    return SweepAxis(name, values)


def _target(word: str) -> tuple[str, str]:
    """`OWNER/REPO[.git][@REF]` as (repo, ref); the ref by git's rules (worker/gitrefs.py)."""
    repo, at, ref = word.partition("@")
    repo = repo.removesuffix(".git")
    if not REPO_RE.fullmatch(repo):
        raise CommandError(E_BAD_TARGET.format(word=quoted(word)))
    if at:
        problem = ref_name_problem(ref)
        if problem:
            raise CommandError(E_BAD_REF.format(ref=quoted(ref), problem=problem))
    return repo, ref


def _looks_like_target(word: str) -> bool:
    return REPO_RE.fullmatch(word.partition("@")[0].removesuffix(".git")) is not None


def run_id_of(word: str) -> str:
    """A run id, also from a pasted run page URL (`…/runs/ID[/…][?…]`)."""
    value = word
    if _RUN_PAGE in value:
        value = value.split(_RUN_PAGE, 1)[1].split("/", 1)[0].split("?", 1)[0]
    if not RUN_ID_RE.fullmatch(value):
        raise CommandError(E_BAD_RUN_ID.format(word=quoted(word)))
    return value


def _keyword_command(kind: CommandKind, rest: list[str], host: Host, command: str) -> Command:
    extra = " ".join(quoted(word) for word in rest)
    if kind is CommandKind.HELP or host is Host.COMMENT:
        if rest:
            raise CommandError(E_NO_ARGUMENTS.format(command=kind.value, extra=extra))
        return Command(kind)
    if len(rest) > 1:
        raise CommandError(E_TOO_MANY.format(command=kind.value, extra=extra))
    if not rest and kind in NEEDS_RUN:
        raise CommandError(E_NEEDS_RUN.format(command=kind.value, name=command))
    return Command(kind, run_id=run_id_of(rest[0]) if rest else "")
