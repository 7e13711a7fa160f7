"""Parsing `/skyrun …` lines: pure, shared by the PR-comment and slash-command front doors."""

from __future__ import annotations

import pytest

from bot.commands import (
    E_BAD_ENV_NAME,
    E_BAD_TARGET,
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
