"""Parsing `/skyrun …` lines: pure, shared by the PR-comment and slash-command front doors."""

from __future__ import annotations

import pytest

from bot.commands import (
    E_BAD_ENV_NAME,
    E_BAD_TARGET,
    E_ENV_VALUE_CHARS,
    E_NEEDS_RUN,
    E_NO_ARGUMENTS,
    E_NOT_ARGUMENT,
    E_QUOTES,
    E_TARGET_NOT_HERE,
    Command,
    CommandError,
    CommandKind,
    command_line,
    parse_args,
    parse_comment,
    parse_envs,
)
from worker.limits import (
    MAX_COMMAND_CHARS,
    MAX_COMMENT_CHARS,
    MAX_ENV_NAME_CHARS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENVS,
    MAX_STAGES,
)


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


def test_stages_and_envs_in_any_order_later_values_win() -> None:
    command = parse_args('train EPOCHS=3 eval NOTE="two words" EPOCHS=5 train')
    assert command == Command(
        CommandKind.RUN, stages=("train", "eval"), envs={"EPOCHS": "5", "NOTE": "two words"}
    )


def test_empty_values_are_allowed() -> None:
    assert parse_args("DATA_BUCKET_URL=").envs == {"DATA_BUCKET_URL": ""}


@pytest.mark.parametrize("word", ["cancel", "status", "help", "CANCEL", "Help"])
def test_keywords_without_arguments(word: str) -> None:
    assert parse_args(word) == Command(CommandKind(word.lower()))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("train -x", E_NOT_ARGUMENT.format(word="'-x'")),
        ("1BAD=secret", E_BAD_ENV_NAME.format(name="'1BAD'")),
        ("train 'unbalanced", E_QUOTES),
        ("cancel now", E_NO_ARGUMENTS.format(command="cancel", extra="'now'")),
        ("help me", E_NO_ARGUMENTS.format(command="help", extra="'me'")),
        ("acme/ml", E_TARGET_NOT_HERE.format(word="'acme/ml'")),
    ],
)
def test_usage_errors_say_what_is_wrong(args: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_args(args)
    assert str(caught.value) == message


def test_errors_never_echo_a_value() -> None:
    with pytest.raises(CommandError) as caught:
        parse_args("bad-name=hunter2")
    assert "hunter2" not in str(caught.value)


def test_long_words_are_cut_in_errors() -> None:
    with pytest.raises(CommandError) as caught:
        parse_args("-" + "x" * 500)
    assert len(str(caught.value)) < 120


def test_with_a_target_for_slash_commands() -> None:
    assert parse_args("acme/ml@dev train K=1", with_target=True) == Command(
        CommandKind.RUN, stages=("train",), envs={"K": "1"}, target="acme/ml@dev"
    )
    assert parse_args("status", with_target=True) == Command(CommandKind.STATUS)
    assert parse_args("status ml-1234", with_target=True) == Command(
        CommandKind.STATUS, target="ml-1234"
    )
    assert parse_args("cancel ml-1234", with_target=True).target == "ml-1234"
    with pytest.raises(CommandError, match="needs the run"):
        parse_args("cancel", with_target=True)
    assert E_NEEDS_RUN.format(command="cancel").startswith("`cancel` needs the run")
    with pytest.raises(CommandError) as caught:
        parse_args("not-a-repo train", with_target=True)
    assert str(caught.value) == E_BAD_TARGET.format(target="'not-a-repo'")


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
    args: str, named: str, limit: int
) -> None:
    with pytest.raises(CommandError) as caught:
        parse_args(args)
    message = str(caught.value)
    assert named in message and f"{limit:,}" in message
    assert "x" * 20 not in message  # never the value
    assert len(message) < 300


def test_values_at_the_limits_are_accepted() -> None:
    envs = {f"K{i}": "x" * MAX_ENV_VALUE_CHARS for i in range(2)}
    assert parse_envs([f"{k}={v}" for k, v in envs.items()]) == envs
    assert len(parse_args(" ".join(f"K{i}=v" for i in range(MAX_ENVS))).envs) == MAX_ENVS


@pytest.mark.parametrize("value", ["a\x00b", "lone\ud800"])
def test_values_that_cannot_reach_an_environment_are_refused(value: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_envs([f"TOKEN={value}"])
    assert str(caught.value) == E_ENV_VALUE_CHARS.format(name="TOKEN")


def test_a_megabyte_comment_is_refused_in_milliseconds() -> None:
    import time

    began = time.perf_counter()
    for body in ("/skyrun echo A=" + "x" * 1_000_000, "/skyrun " + "'" * MAX_COMMENT_CHARS):
        with pytest.raises(CommandError, match="the /skyrun command is"):
            parse_comment(body)
    assert time.perf_counter() - began < 0.5
