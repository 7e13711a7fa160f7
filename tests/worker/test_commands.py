"""The one `/skyrun` parser, for PR comments and Slack slash commands alike (pure)."""

from __future__ import annotations

import json
import time

import pytest
from temporalio.converter import DataConverter

from worker.commands import (
    COMMENT_USAGE,
    E_BAD_ENV_NAME,
    E_BAD_REF,
    E_BAD_RUN_ID,
    E_BAD_TARGET,
    E_EMPTY_TARGET,
    E_ENV_VALUE_CHARS,
    E_NEEDS_RUN,
    E_NO_ARGUMENTS,
    E_NOT_ARGUMENT,
    E_QUOTES,
    E_SWEEP_DUPLICATE_KEY,
    E_SWEEP_DUPLICATE_VALUE,
    E_SWEEP_EMPTY_VALUE,
    E_SWEEP_NOTHING,
    E_TARGET_NOT_HERE,
    E_TOO_MANY,
    SLASH_USAGE,
    Command,
    CommandError,
    CommandKind,
    Host,
    command_line,
    parse,
    parse_comment,
    parse_envs,
    repo_allowed,
    usage,
)
from worker.github.contract import GitHubCommand
from worker.gitrefs import P_DASH, P_DOTDOT, P_EMPTY
from worker.limits import (
    MAX_COMMAND_CHARS,
    MAX_COMMENT_CHARS,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENVS,
    MAX_STAGES,
)
from worker.sweepspec import SweepAxis

COMMENT = Host.COMMENT
SLASH = Host.SLASH


def comment(args: str) -> Command:
    return parse(args, COMMENT)


def slash(args: str, command: str = "/skyrun") -> Command:
    return parse(args, SLASH, command=command)


def refusal(args: str, host: Host) -> str:
    with pytest.raises(CommandError) as caught:
        parse(args, host)
    return str(caught.value)


# The first line of a comment.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/skyrun", ""),
        ("  /skyrun train\nmore text /skyrun cancel", "train"),
        ("/skyrun\tEPOCHS=3 ", "EPOCHS=3"),
        ("\n\n/skyrun help\r\n", "help"),
        ("/skyrunner", None),
        ("please /skyrun", None),
        ("> /skyrun", None),
        ("first line\n/skyrun", None),
        ("", None),
    ],
)
def test_only_a_first_line_starting_with_skyrun_is_a_command(
    text: str, expected: str | None
) -> None:
    assert command_line(text) == expected


def test_a_plain_run() -> None:
    assert parse_comment("/skyrun") == Command(CommandKind.RUN)
    assert parse_comment("LGTM") is None


# What both forms share: keywords, stages, KEY=VALUE, limits.


@pytest.mark.parametrize("host", list(Host))
def test_stages_and_envs_in_any_order_later_values_win(host: Host) -> None:
    args = 'train EPOCHS=3 eval NOTE="two words" EPOCHS=5 train'
    if host is SLASH:
        args = "acme/ml " + args
    command = parse(args, host)
    assert command.kind is CommandKind.RUN
    assert command.stages == ("train", "eval")
    assert command.envs == {"EPOCHS": "5", "NOTE": "two words"}


def test_empty_values_are_allowed() -> None:
    assert comment("DATA_BUCKET_URL=").envs == {"DATA_BUCKET_URL": ""}
    assert slash("acme/widgets NOTE=").envs == {"NOTE": ""}


@pytest.mark.parametrize("word", ["cancel", "status", "help", "CANCEL", "Help"])
def test_comment_keywords_without_arguments(word: str) -> None:
    assert comment(word) == Command(CommandKind(word.lower()))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("train -x", E_NOT_ARGUMENT.format(word="'-x'")),
        ("1BAD=secret", E_BAD_ENV_NAME.format(name="'1BAD'")),
        ("train 'unbalanced", E_QUOTES),
        ("cancel now", E_NO_ARGUMENTS.format(command="cancel", extra="'now'")),
        ("status ml-1", E_NO_ARGUMENTS.format(command="status", extra="'ml-1'")),
        ("help me", E_NO_ARGUMENTS.format(command="help", extra="'me'")),
        ("acme/ml", E_TARGET_NOT_HERE.format(word="'acme/ml'")),
        ("acme/ml@dev", E_TARGET_NOT_HERE.format(word="'acme/ml@dev'")),
    ],
)
def test_comment_usage_errors_say_what_is_wrong(args: str, message: str) -> None:
    assert refusal(args, COMMENT) == message


@pytest.mark.parametrize("host", list(Host))
def test_errors_never_echo_a_value(host: Host) -> None:
    for args in ("bad-name=hunter2", "1TOKEN=hunter2"):
        assert "hunter2" not in refusal(("acme/w " if host is SLASH else "") + args, host)


def test_long_words_are_cut_in_errors() -> None:
    assert len(refusal("-" + "x" * 500, COMMENT)) < 120
    assert len(refusal("acme/w " + "-" * 500, SLASH)) < 120
    assert len(refusal("x" * 500, SLASH)) < 200


@pytest.mark.parametrize("host", list(Host))
@pytest.mark.parametrize(
    ("args", "named", "limit"),
    [
        ("A=" + "x" * (MAX_ENV_VALUE_CHARS + 1), "the value of A", MAX_ENV_VALUE_CHARS),
        ("B" * (MAX_ENV_NAME_CHARS + 1) + "=1", "the name 'BBBB", MAX_ENV_NAME_CHARS),
        (" ".join(f"K{i}=v" for i in range(MAX_ENVS + 1)), "KEY=VALUE settings", MAX_ENVS),
        (" ".join(f"s{i}" for i in range(MAX_STAGES + 1)), "stages", MAX_STAGES),
        ("echo A=" + "x" * MAX_COMMAND_CHARS, "the /skyrun command", MAX_COMMAND_CHARS),
    ],
)
def test_limits_are_usage_errors_naming_the_key_and_limit(
    host: Host, args: str, named: str, limit: int
) -> None:
    message = refusal(("acme/w " if host is SLASH else "") + args, host)
    assert named in message and f"{limit:,}" in message
    assert "x" * 20 not in message  # never the value
    assert len(message) < 300


def test_values_at_the_limits_are_accepted() -> None:
    envs = {f"K{i}": "x" * MAX_ENV_VALUE_CHARS for i in range(2)}
    assert parse_envs([f"{k}={v}" for k, v in envs.items()]) == envs
    assert len(comment(" ".join(f"K{i}=v" for i in range(MAX_ENVS))).envs) == MAX_ENVS
    stages = " ".join(f"s{i}" for i in range(MAX_STAGES))
    assert len(slash(f"acme/w {stages} {stages}").stages) == MAX_STAGES


@pytest.mark.parametrize("value", ["a\x00b", "lone\ud800"])
def test_values_that_cannot_reach_an_environment_are_refused(value: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_envs([f"TOKEN={value}"])
    assert str(caught.value) == E_ENV_VALUE_CHARS.format(name="TOKEN")


def test_a_megabyte_comment_is_refused_in_milliseconds() -> None:
    began = time.perf_counter()
    for body in ("/skyrun echo A=" + "x" * 1_000_000, "/skyrun " + "'" * MAX_COMMENT_CHARS):
        with pytest.raises(CommandError, match="the /skyrun command is"):
            parse_comment(body)
    for text in ("acme/w A=" + "x" * 1_000_000, "<" * MAX_COMMENT_CHARS):
        with pytest.raises(CommandError, match="the /skyrun command is"):
            slash(text)
    assert time.perf_counter() - began < 0.5


# The slash form: it names the repository to run, or the run to act on.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("acme/widgets", Command(CommandKind.RUN, repo="acme/widgets")),
        ("acme/widgets@main", Command(CommandKind.RUN, repo="acme/widgets", ref="main")),
        (
            "acme/widgets.git@release/1.2",
            Command(CommandKind.RUN, repo="acme/widgets", ref="release/1.2"),
        ),
        (
            "acme/widgets@dev train eval LR=0.01 NOTE=",
            Command(
                CommandKind.RUN,
                ("train", "eval"),
                {"LR": "0.01", "NOTE": ""},
                repo="acme/widgets",
                ref="dev",
            ),
        ),
        (
            "acme/widgets MSG=\u201chello world\u201d train train",
            Command(CommandKind.RUN, ("train",), {"MSG": "hello world"}, repo="acme/widgets"),
        ),
        (
            "acme/widgets URL=a&amp;b",
            Command(CommandKind.RUN, envs={"URL": "a&b"}, repo="acme/widgets"),
        ),
        ("help", Command(CommandKind.HELP)),
        ("  HELP ", Command(CommandKind.HELP)),
        ("status", Command(CommandKind.STATUS)),
        ("status widgets-1a2b3c4d5e", Command(CommandKind.STATUS, run_id="widgets-1a2b3c4d5e")),
        (
            "status <http://skyrun.test/runs/widgets-1a2b3c4d5e|the run>",
            Command(CommandKind.STATUS, run_id="widgets-1a2b3c4d5e"),
        ),
        ("cancel widgets-1a2b3c4d5e", Command(CommandKind.CANCEL, run_id="widgets-1a2b3c4d5e")),
        (
            "cancel https://skyrun.example/runs/widgets-1a2b3c4d5e?x=1",
            Command(CommandKind.CANCEL, run_id="widgets-1a2b3c4d5e"),
        ),
    ],
)
def test_slash_commands_parse(text: str, expected: Command) -> None:
    assert slash(text) == expected


def test_the_target_of_a_run() -> None:
    assert slash("acme/ml@dev train K=1").target == "acme/ml@dev"
    assert slash("acme/ml.git train").target == "acme/ml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", E_EMPTY_TARGET.format(command="/skyrun")),
        ("deploy", E_BAD_TARGET.format(word="'deploy'")),
        ("acme", E_BAD_TARGET.format(word="'acme'")),
        ("not-a-repo train", E_BAD_TARGET.format(word="'not-a-repo'")),
        ("acme/widgets@", E_BAD_REF.format(ref="''", problem=P_EMPTY)),
        ("acme/widgets@a..b", E_BAD_REF.format(ref="'a..b'", problem=P_DOTDOT)),
        ("acme/widgets@-rf", E_BAD_REF.format(ref="'-rf'", problem=P_DASH)),
        ("../../etc/passwd", E_BAD_TARGET.format(word="'../../etc/passwd'")),
        ("acme/..", E_BAD_TARGET.format(word="'acme/..'")),
        ("-rf/x", E_BAD_TARGET.format(word="'-rf/x'")),
        ("acme/widgets tr@in", E_NOT_ARGUMENT.format(word="'tr@in'")),
        ("acme/widgets 'unbalanced", E_QUOTES),
        ("acme/widgets 1X=2", E_BAD_ENV_NAME.format(name="'1X'")),
        ("status a b", E_TOO_MANY.format(command="status", extra="'a' 'b'")),
        ("status ../etc", E_BAD_RUN_ID.format(word="'../etc'")),
        ("status -rf", E_BAD_RUN_ID.format(word="'-rf'")),
        ("cancel " + "r" * 201, E_BAD_RUN_ID.format(word=repr("r" * 40 + "…"))),
        ("cancel", E_NEEDS_RUN.format(command="cancel", name="/skyrun")),
        ("cancel a b", E_TOO_MANY.format(command="cancel", extra="'a' 'b'")),
        ("help me", E_NO_ARGUMENTS.format(command="help", extra="'me'")),
    ],
)
def test_bad_slash_commands_say_what_is_wrong(text: str, message: str) -> None:
    assert refusal(text, SLASH) == message


def test_messages_name_the_slash_command_as_installed() -> None:
    with pytest.raises(CommandError) as caught:
        slash("cancel", command="/skyrun-dev")
    assert "`/skyrun-dev cancel RUN`" in str(caught.value)
    with pytest.raises(CommandError, match="/skyrun-dev OWNER/REPO"):
        slash("", command="/skyrun-dev")


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("acme/widgets@" + "b" * 300, "255"),
        ("acme/widgets A=" + "x" * MAX_COMMAND_CHARS, f"{MAX_COMMAND_CHARS:,}"),
    ],
)
def test_slash_limits_name_the_limit(text: str, limit: str) -> None:
    message = refusal(text, SLASH)
    assert limit in message and "xxxxxxxxxx" not in message


def test_a_nul_or_control_character_in_a_ref_is_refused() -> None:
    for ref in ("main\x00x", "main\tx", "ma in"):
        with pytest.raises(CommandError, match="not a branch, tag or commit name"):
            slash(f"'acme/widgets@{ref}'")


def test_slack_markup_is_undone_only_for_the_slash_form() -> None:
    assert slash("acme/w URL=<https://x.test/a?b=1&amp;c=2>").envs == {
        "URL": "https://x.test/a?b=1&c=2"
    }
    assert comment("URL=a&amp;b").envs == {"URL": "a&amp;b"}
    assert comment("MSG=\u201chi\u201d").envs == {"MSG": "\u201chi\u201d"}


# Usage texts, the enum that travels in workflow inputs, and the repository globs.


def test_usage_for_each_host() -> None:
    assert usage(COMMENT) == COMMENT_USAGE
    assert usage(SLASH, "/skyrun-dev") == SLASH_USAGE.format(command="/skyrun-dev")
    assert "`/skyrun-dev status [RUN]`" in usage(SLASH, "/skyrun-dev")


def test_the_command_kinds_keep_their_serialized_values() -> None:
    # GitHubCommand.action is in workflow inputs: these strings must never change.
    assert {kind.name: kind.value for kind in CommandKind} == {
        "RUN": "run",
        "CANCEL": "cancel",
        "STATUS": "status",
        "HELP": "help",
        "USAGE": "usage",
        "RETRY": "retry",
        "SWEEP": "sweep",
        "APPROVE": "approve",  # budgets (issue 14)
    }
    assert CommandKind is CommandKind
    assert GitHubCommand.__dataclass_fields__["action"].type == "CommandKind"


def test_a_command_started_before_the_upgrade_still_decodes() -> None:
    # A GitHubCommand as the previous release wrote it into a workflow input.
    written = {
        "action": "usage",
        "repo": "acme/ml",
        "clone_url": "https://github.com/acme/ml.git",
        "pr_number": 7,
        "comment_id": 1,
        "comment_created_at": "2026-01-01T00:00:00Z",
        "requested_by": "alice",
        "delivery_id": "d-1",
        "error": "'-x' is neither a stage name nor KEY=VALUE",
    }
    converter = DataConverter.default.payload_converter
    [payload] = converter.to_payloads([written])
    [command] = converter.from_payloads([payload], [GitHubCommand])
    assert isinstance(command, GitHubCommand)
    assert command.action is CommandKind.USAGE
    [again] = converter.to_payloads([command])
    assert json.loads(again.data)["action"] == "usage"


def test_repo_globs_ignore_case() -> None:
    assert repo_allowed("Acme/ML", ["acme/*"])
    assert repo_allowed("acme/ml", ["*"])
    assert repo_allowed("acme/widgets", ["ACME/*"])
    assert not repo_allowed("evil/widgets", ["acme/*"])
    assert not repo_allowed("acme/ml", ["acme/ml-*", "other/ml"])
    assert not repo_allowed("acme/ml", [])


# Retry from the failed stage: `/skyrun retry` on a pull request, `/skyrun retry RUN` in Slack.


class TestRetry:
    def test_on_a_pull_request_it_takes_no_arguments(self) -> None:
        assert comment("retry") == Command(CommandKind.RETRY)
        assert comment("RETRY") == Command(CommandKind.RETRY)
        with pytest.raises(CommandError) as caught:
            comment("retry eval")
        assert str(caught.value) == E_NO_ARGUMENTS.format(command="retry", extra="'eval'")

    def test_in_slack_it_names_the_run_also_as_a_run_page_url(self) -> None:
        assert slash("retry widgets-1a2b3c4d5e") == Command(
            CommandKind.RETRY, run_id="widgets-1a2b3c4d5e"
        )
        assert slash("retry <https://skyrun.test/runs/widgets-1a2b3c4d5e>").run_id == (
            "widgets-1a2b3c4d5e"
        )
        with pytest.raises(CommandError) as caught:
            slash("retry", command="/skyrun-dev")
        assert str(caught.value) == E_NEEDS_RUN.format(command="retry", name="/skyrun-dev")
        with pytest.raises(CommandError):
            slash("retry --upload-pack=x")
        with pytest.raises(CommandError):
            slash("retry a b")

    def test_usage_texts_explain_it(self) -> None:
        assert "`/skyrun retry`" in COMMENT_USAGE
        assert "`/skyrun-dev retry RUN`" in usage(SLASH, "/skyrun-dev")
        with pytest.raises(CommandError) as caught:
            slash("nonsense")
        assert "retry" in str(caught.value)


# Sweeps: `/skyrun sweep [STAGE ...] KEY=a,b [KEY=c,d ...]`, values split on commas only.


def test_a_sweep_lists_its_axes_in_order_and_its_stages() -> None:
    parsed = comment("sweep train eval LR=0.01,0.1 BS=32,64,128")
    assert parsed.kind is CommandKind.SWEEP
    assert parsed.stages == ("train", "eval")
    assert parsed.sweep == (SweepAxis("LR", ["0.01", "0.1"]), SweepAxis("BS", ["32", "64", "128"]))
    assert parsed.envs == {}
    assert parse_comment("/skyrun SWEEP A=1,2").kind is CommandKind.SWEEP  # type: ignore[union-attr]


def test_a_slack_sweep_names_its_repository_first() -> None:
    parsed = slash("sweep acme/models@dev train LR=0.1,0.2")
    assert (parsed.kind, parsed.repo, parsed.ref, parsed.stages) == (
        CommandKind.SWEEP,
        "acme/models",
        "dev",
        ("train",),
    )
    assert parsed.sweep == (SweepAxis("LR", ["0.1", "0.2"]),)
    assert refusal("sweep", SLASH) == E_EMPTY_TARGET.format(command="/skyrun")
    assert refusal("sweep LR=1,2", SLASH) == E_BAD_TARGET.format(word="'LR=1,2'")


def test_without_sweep_a_comma_is_just_a_comma() -> None:
    assert comment("LR=0.1,0.2").envs == {"LR": "0.1,0.2"}
    assert comment("LR=0.1,0.2").kind is CommandKind.RUN
    assert slash("acme/m TAGS=a,b").envs == {"TAGS": "a,b"}


def test_sweep_values_split_on_commas_only() -> None:
    (axis,) = comment("sweep 'MSG=a b,c=d,\"e\"'").sweep
    assert axis == SweepAxis("MSG", ["a b", "c=d", '"e"'])
    # Hostile values are only values: env values for the tasks, never options or shell words.
    (axis,) = comment("sweep 'X=--upload-pack=evil,$(rm -rf ~),;|&,../../etc'").sweep
    assert axis.values == ["--upload-pack=evil", "$(rm -rf ~)", ";|&", "../../etc"]
    (axis,) = slash("sweep acme/m URL=<https://x.test/?a=1&amp;b=2>,x").sweep
    assert axis.values == ["https://x.test/?a=1&b=2", "x"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ("sweep", E_SWEEP_NOTHING.format(example="/skyrun sweep LR=0.01,0.1")),
        ("sweep train", E_SWEEP_NOTHING.format(example="/skyrun sweep LR=0.01,0.1")),
        ("sweep LR=0.1", E_SWEEP_NOTHING.format(example="/skyrun sweep LR=0.01,0.1")),
        ("sweep LR=", E_SWEEP_EMPTY_VALUE.format(name="LR")),
        ("sweep LR=0.1,,0.2", E_SWEEP_EMPTY_VALUE.format(name="LR")),
        ("sweep LR=0.1,", E_SWEEP_EMPTY_VALUE.format(name="LR")),
        ("sweep LR=,0.1", E_SWEEP_EMPTY_VALUE.format(name="LR")),
        ("sweep LR=1,2 LR=3,4", E_SWEEP_DUPLICATE_KEY.format(name="LR")),
        ("sweep LR=1,2,1", E_SWEEP_DUPLICATE_VALUE.format(name="LR")),
        ("sweep 1LR=1,2", E_BAD_ENV_NAME.format(name="'1LR'")),
        ("sweep --x=1,2", E_BAD_ENV_NAME.format(name="'--x'")),
        ("sweep =1,2", E_BAD_ENV_NAME.format(name="''")),
        ("sweep acme/ml A=1,2", E_TARGET_NOT_HERE.format(word="'acme/ml'")),
        ("sweep -rf A=1,2", E_NOT_ARGUMENT.format(word="'-rf'")),
    ],
)
def test_bad_sweeps_are_refused_with_a_reason(args: str, error: str) -> None:
    assert refusal(args, COMMENT) == error


def test_sweep_errors_never_echo_a_value() -> None:
    secret = "hunter2-secret"
    for args in (
        f"sweep TOKEN={secret},{secret}",
        f"sweep TOKEN={secret},,x",
        f"sweep TOKEN={secret}\x00,x",
        f"sweep TOKEN={secret}{'x' * MAX_ENV_VALUE_CHARS},y",
    ):
        with pytest.raises(CommandError) as raised:
            comment(args)
        assert secret not in str(raised.value)
    assert refusal("sweep TOKEN=a\x00b,c", COMMENT) == E_ENV_VALUE_CHARS.format(name="TOKEN")


def test_sweep_limits_are_those_of_key_value() -> None:
    many = " ".join(f"K{i}=a,b" for i in range(MAX_ENVS + 1))
    assert "the limit is" in refusal(f"sweep {many}", COMMENT)
    long = "sweep A=" + ",".join(str(i) for i in range(MAX_COMMAND_CHARS))
    assert "shorten it" in refusal(long, COMMENT)


def test_the_sweep_usage_is_in_both_usage_texts() -> None:
    assert "`/skyrun sweep [STAGE ...] KEY=a,b [KEY=c,d ...]`" in COMMENT_USAGE
    assert "`{command} sweep OWNER/REPO[@REF]" in SLASH_USAGE


# --- approve (budgets, issue 14) -----------------------------------------------------------------


class TestApprove:
    def test_on_a_pull_request_it_takes_no_arguments(self) -> None:
        assert parse("approve", Host.COMMENT) == Command(CommandKind.APPROVE)
        assert parse("APPROVE", Host.COMMENT) == Command(CommandKind.APPROVE)
        with pytest.raises(CommandError) as refused:
            parse("approve run-1", Host.COMMENT)
        assert str(refused.value) == E_NO_ARGUMENTS.format(command="approve", extra="'run-1'")

    def test_in_slack_it_names_the_run(self) -> None:
        assert parse("approve ml-0123456789", Host.SLASH) == Command(
            CommandKind.APPROVE, run_id="ml-0123456789"
        )
        with pytest.raises(CommandError) as refused:
            parse("approve", Host.SLASH)
        assert str(refused.value) == E_NEEDS_RUN.format(command="approve", name="/skyrun")
        with pytest.raises(CommandError):
            parse("approve a b", Host.SLASH)

    def test_usage_mentions_it(self) -> None:
        assert "`/skyrun approve`" in COMMENT_USAGE
