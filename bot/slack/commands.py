"""Parsing `/skyrun` text into a command, and a run command into a run request (pure)."""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field

from bot.commands import CommandError, check_counts, check_length, parse_envs
from bot.slack import texts
from worker.contract import RunRequest, SlackTarget, Trigger, lane_for_branch
from worker.gitrefs import ref_name_problem
from worker.links import REPO_RE, GitHubHost
from worker.pipeline import NAME_RE

RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# Slack turns quotes typographic and escapes &, < and > in command text.
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
_LINK = re.compile(r"<([^|>]+)(?:\|[^>]*)?>")


class UsageError(ValueError):
    """The command text is wrong; the message says how (shown with the usage)."""


@dataclass(frozen=True)
class RunCommand:
    repo: str
    ref: str = ""
    stages: tuple[str, ...] = ()
    envs: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"{self.repo}@{self.ref}" if self.ref else self.repo


@dataclass(frozen=True)
class StatusCommand:
    run_id: str = ""


@dataclass(frozen=True)
class CancelCommand:
    run_id: str


@dataclass(frozen=True)
class HelpCommand:
    pass


Command = RunCommand | StatusCommand | CancelCommand | HelpCommand


def words(text: str) -> list[str]:
    """Split like a shell, after undoing what Slack does to the text (links become their URL)."""
    try:
        check_length(text)
    except CommandError as err:
        raise UsageError(texts.E_LIMIT.format(detail=err)) from None
    text = (
        _LINK.sub(r"\1", text)
        .translate(_QUOTES)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )
    try:
        return shlex.split(text)
    except ValueError as err:
        raise UsageError(texts.E_QUOTES.format(detail=str(err).lower())) from None


def run_id_of(value: str) -> str:
    """A run id, also from a pasted run page URL."""
    if "/runs/" in value:
        value = value.split("/runs/", 1)[1].split("/", 1)[0].split("?", 1)[0]
    if not RUN_ID_RE.fullmatch(value):
        raise UsageError(texts.E_RUN_ID.format(value=value[:80]))
    return value


def parse(text: str, command: str = "/skyrun") -> Command:
    """The command in a slash command's text; raises UsageError saying what is wrong."""
    args = words(text)
    if not args:
        raise UsageError(texts.E_EMPTY)
    head, rest = args[0], args[1:]
    verb = head.lower()
    if verb == "help":
        if rest:
            raise UsageError(texts.E_HELP_ARGS)
        return HelpCommand()
    if verb == "status":
        if len(rest) > 1:
            raise UsageError(texts.E_STATUS_ARGS)
        return StatusCommand(run_id_of(rest[0]) if rest else "")
    if verb == "cancel":
        if len(rest) != 1:
            raise UsageError(texts.E_CANCEL_ARGS.format(command=command))
        return CancelCommand(run_id_of(rest[0]))
    return _run(head, rest)


def _run(head: str, rest: list[str]) -> RunCommand:
    repo, _, ref = head.partition("@")
    repo = repo.removesuffix(".git")
    if not REPO_RE.fullmatch(repo):
        raise UsageError(texts.E_UNKNOWN.format(word=head[:80]))
    if "@" in head:
        problem = ref_name_problem(ref)
        if problem:
            raise UsageError(texts.E_REF.format(ref=ref[:80], problem=problem))
    stages = [word for word in rest if "=" not in word]
    for stage in stages:
        if not NAME_RE.fullmatch(stage):
            raise UsageError(texts.E_STAGE.format(stage=stage[:80]))
    try:
        envs = parse_envs([word for word in rest if "=" in word])
    except CommandError as err:
        raise UsageError(texts.E_ENV.format(detail=err)) from None
    try:
        check_counts(len(set(stages)), len(envs))
    except CommandError as err:
        raise UsageError(texts.E_LIMIT.format(detail=err)) from None
    return RunCommand(repo=repo, ref=ref, stages=tuple(dict.fromkeys(stages)), envs=envs)


def delivery_id(trigger_id: str, body: str) -> str:
    """What identifies one Slack request across its retries (they repeat the same trigger id)."""
    if trigger_id:
        return f"slack:{trigger_id}"
    return "slack:" + hashlib.sha256(body.encode()).hexdigest()[:32]


def run_request(
    command: RunCommand,
    *,
    github: GitHubHost,
    user: str,
    channel: str,
    response_url: str,
    delivery: str,
) -> RunRequest:
    return RunRequest(
        repo=command.repo,
        clone_url=github.clone_url(command.repo),
        ref=command.ref,
        stages=list(command.stages),
        envs=dict(command.envs),
        trigger=Trigger.SLACK,
        requested_by=user,
        lane=lane_for_branch(command.repo, command.ref or "default"),
        delivery_id=delivery,
        slack=SlackTarget(channel=channel, user=user, response_url=response_url),
    )
