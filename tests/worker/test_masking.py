"""The one masker: every secret of the settings and learned ones, in text, data and streams."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from tests.fakes.slack import FakeSlack
from tests.worker.github.stack import github_stack, unique_repo
from worker.activities import PipelineActivities
from worker.backends.base import BackendError, TaskRun
from worker.contract import RunProgress, RunRequest, RunState, StageProgress, StageState, Trigger
from worker.masking import MASK, MIN_SECRET_CHARS, Masker
from worker.models import PlannedStage, StageInput
from worker.settings import Settings

TOKEN = "ghp_token_secret_0123456789"
PEM_LINES = [
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu",
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ",
    "Lw==",
]
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(PEM_LINES) + "\n-----END PRIVATE KEY-----\n"


def test_every_secret_of_the_settings_is_masked(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(PEM)
    tls_key = tmp_path / "tls.key"
    tls_key.write_text("-----BEGIN EC PRIVATE KEY-----\ntls_key_body_line_secret\n-----END")
    secrets = {
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_WEBHOOK_SECRET": "webhook-secret-value",
        "GITHUB_APP_PRIVATE_KEY": PEM.replace("\n", "\\n"),
        "SLACK_BOT_TOKEN": "xoxb-slack-bot-token",
        "SLACK_SIGNING_SECRET": "slack-signing-secret",
        "TEMPORAL_API_KEY": "temporal-api-key-value",
    }
    settings = make_settings(
        **secrets,
        GITHUB_APP_ID="42",
        GITHUB_APP_PRIVATE_KEY_PATH=key_file,
        TEMPORAL_TLS_KEY_PATH=tls_key,
        GITHUB_API_URL="https://bot:url-password-secret@ghe.example.com/api/v3",
    )
    masker = Masker.from_settings(settings)
    leaked = "\n".join([*secrets.values(), PEM, "tls_key_body_line_secret", "url-password-secret"])
    masked = masker.mask(leaked)
    for value in (*secrets.values(), *PEM_LINES[:3], "tls_key_body_line_secret"):
        assert value not in masked
    assert "url-password-secret" not in masked
    # One line of the key printed alone, or the key re-wrapped, is still masked line by line.
    assert masker.mask(f"x{PEM_LINES[1]}y") == f"x{MASK}y"
    assert PEM_LINES[0] not in masker.mask(PEM.replace("\n", "\r\n"))
    # The key's header lines are no secret; its short last line is too short to mask.
    assert "-----BEGIN PRIVATE KEY-----" in masker.mask("-----BEGIN PRIVATE KEY-----")
    assert masker.mask("Lw== and bot") == "Lw== and bot"


def test_short_values_are_not_masked_and_learned_ones_are() -> None:
    masker = Masker(["abc", "x" * (MIN_SECRET_CHARS - 1)])
    assert masker.mask("abc xxxxxxx") == "abc xxxxxxx"
    assert masker.secrets == []
    masker.add("ghs_minted_installation_token", None, "")
    assert masker.mask("t=ghs_minted_installation_token.") == f"t={MASK}."
    assert masker.mask_bytes(b"ghs_minted_installation_token\n") == b"***\n"


def test_a_secret_quoted_in_a_url_is_masked_too() -> None:
    masker = Masker(["p@ss/word+secret"])
    assert masker.mask("https://x:p%40ss%2Fword%2Bsecret@host/") == f"https://x:{MASK}@host/"


def test_the_longest_secret_wins_where_secrets_overlap() -> None:
    masker = Masker(["secret-one", "secret-one-and-more"])
    assert masker.mask("secret-one-and-more!") == f"{MASK}!"


@dataclass
class Holder:
    names: dict[str, float] = field(default_factory=dict)
    items: tuple[str, ...] = ()


def test_data_is_masked_in_a_copy_keys_too_and_enums_stay() -> None:
    masker = Masker([TOKEN])
    stage = StageProgress(
        "train",
        "gpu",
        StageState.FAILED,
        report=f"r {TOKEN}",
        log_tail=[TOKEN],
        metrics={TOKEN: 1.0},
    )
    progress = RunProgress("r1", "acme/ml", "main", "", Trigger.CLI, "", RunState.FAILED, [stage])
    masked = masker.mask_data(progress)
    assert masked.stages[0].report == f"r {MASK}" and masked.stages[0].log_tail == [MASK]
    assert masked.metrics == {MASK: 1.0} and masked.state is RunState.FAILED
    assert masked.stages[0].state is StageState.FAILED
    assert progress.stages[0].report == f"r {TOKEN}", "the original is unchanged"
    holder = Holder({TOKEN: 2.0}, (TOKEN, "ok"))
    assert masker.mask_data(holder) == Holder({MASK: 2.0}, (MASK, "ok"))
    text = {"type": "mrkdwn", "text": f"```{TOKEN}```"}
    blocks: list[dict[str, Any]] = [{"type": "section", "text": text}]
    assert masker.mask_data(blocks)[0]["text"]["text"] == f"```{MASK}```"
    assert masker.mask_data(None) is None and Masker().mask_data(progress) is progress


def _streamed(masker: Masker, pieces: list[bytes]) -> tuple[bytes, list[bytes]]:
    """What the stream wrote in the end, and what was visible after each write."""
    raw = io.BytesIO()
    stream = masker.stream(raw)
    seen = []
    for piece in pieces:
        stream.write(piece)
        stream.flush()
        seen.append(raw.getvalue())
    stream.close()
    return raw.getvalue(), seen


def test_a_secret_split_across_writes_is_masked_at_every_split() -> None:
    masker = Masker([TOKEN, "xoxb-slack-bot-token"])
    line = f"(task, pid=7) token={TOKEN} and xoxb-slack-bot-token end\n".encode()
    expected = masker.mask_bytes(line)
    assert TOKEN.encode() not in expected
    for cut in range(1, len(line)):
        for second in range(cut, len(line)):
            pieces = [line[:cut], line[cut:second], line[second:]]
            final, seen = _streamed(masker, [p for p in pieces if p])
            assert final == expected, (cut, second)
            for visible in seen:
                # Nothing visible at any moment holds a piece of a secret that is later masked.
                assert b"ghp_token" not in visible and b"xoxb-sl" not in visible


def test_random_writes_of_a_long_log_are_masked_like_the_whole() -> None:
    masker = Masker([TOKEN, "webhook-secret-value", *PEM_LINES])
    rng = random.Random(7)
    words = [TOKEN, "webhook-secret-value", PEM, "epoch", "\n", "\r", " ", "é", "loss=0.1"]
    log = "".join(rng.choice(words) for _ in range(3000)).encode()
    pieces, at = [], 0
    while at < len(log):
        size = rng.randint(1, 90)
        pieces.append(log[at : at + size])
        at += size
    final, _ = _streamed(masker, pieces)
    assert final == masker.mask_bytes(log)
    for secret in (TOKEN, "webhook-secret-value", *PEM_LINES[:3]):
        assert secret.encode() not in final


def test_a_stream_lags_by_at_most_the_line_being_written_and_never_holds_much() -> None:
    masker = Masker([TOKEN])
    raw = io.BytesIO()
    stream = masker.stream(raw)
    stream.write(b"epoch 1 done\nepoch 2: ")
    assert raw.getvalue() == b"epoch 1 done\n"  # whole lines at once
    # A progress bar that never ends its line: all but a secret's length is written.
    for _ in range(1000):
        stream.write(b"#" * 10)
    assert len(raw.getvalue()) >= len(b"epoch 1 done\nepoch 2: ") + 10_000 - len(TOKEN)
    stream.write(b"\n")
    assert raw.getvalue().endswith(b"#\n")
    stream.close()
    assert not raw.closed, "the log file itself stays open for the caller"


def test_concurrent_writers_never_interleave_a_secret_unmasked() -> None:
    masker = Masker([TOKEN])
    raw = io.BytesIO()
    stream = masker.stream(raw)
    line = f"{TOKEN}\n".encode()

    def write() -> None:
        for _ in range(300):
            stream.write(line)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stream.close()
    assert raw.getvalue() == b"***\n" * 1200


def test_a_stream_has_no_file_descriptor_to_bypass_it() -> None:
    stream = Masker([TOKEN]).stream(io.BytesIO())
    with pytest.raises(OSError):
        stream.fileno()  # a process given it would write around the masking


# End to end: a task that prints every secret (passed to it on purpose, to simulate a leak).

LEAKS = {
    "GITHUB_TOKEN": "ghp_leaked_github_token_0123",
    "SLACK_BOT_TOKEN": "xoxb-leaked-slack-bot-token",
    "SLACK_SIGNING_SECRET": "leaked-slack-signing-secret",
    "TEMPORAL_API_KEY": "leaked-temporal-api-key-value",
}
LEAK_TASK = """\
run: |
  echo "gh=$LEAK_GITHUB_TOKEN hook=$LEAK_GITHUB_WEBHOOK_SECRET"
  echo "slack=$LEAK_SLACK_BOT_TOKEN signing=$LEAK_SLACK_SIGNING_SECRET"
  echo "temporal=$LEAK_TEMPORAL_API_KEY installation=$LEAK_INSTALLATION"
  printf 'split=%s' "$(printf %s "$LEAK_INSTALLATION" | cut -c1-12)"
  sleep 0.3
  printf '%s\\n' "$(printf %s "$LEAK_INSTALLATION" | cut -c13-)"
  echo "::metric $LEAK_GITHUB_TOKEN=1"
  echo ::report
  echo "report: $LEAK_SLACK_BOT_TOKEN $LEAK_INSTALLATION"
  echo ::endreport
  exit 1
"""
LEAK_PIPELINE = {
    ".skyrun.yaml": ("stages:\n  - {name: leak, task: leak.yaml}\nnotify: {slack: '#ml-runs'}\n"),
    "leak.yaml": LEAK_TASK,
}


async def test_a_task_printing_every_secret_shows_none_anywhere_its_output_goes(
    client: Client, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    async with (
        FakeSlack(token=LEAKS["SLACK_BOT_TOKEN"]) as slack,
        github_stack(
            client,
            make_settings,
            tmp_path,
            app_id="4242",
            SLACK_API_URL=slack.api_url,
            GITHUB_TOKEN=LEAKS["GITHUB_TOKEN"],
            SLACK_BOT_TOKEN=LEAKS["SLACK_BOT_TOKEN"],
            SLACK_SIGNING_SECRET=LEAKS["SLACK_SIGNING_SECRET"],
            TEMPORAL_API_KEY=LEAKS["TEMPORAL_API_KEY"],
        ) as stack,
    ):
        fake = stack.fake
        repo = unique_repo()
        fake.add_repo(repo, LEAK_PIPELINE)
        fake.install(77, repo)
        fake.commit(repo, {"x.txt": "1"}, branch="feature")
        pull = fake.open_pull(repo, "feature", user="alice")
        fake.grant(repo, "alice", "write")
        # The worker mints its installation token for the first command; the run reuses it.
        await stack.command(fake.add_comment(repo, pull.number, "alice", "/skyrun status"))
        (installation,) = fake.minted
        secrets: dict[str, str] = {
            **LEAKS,
            "GITHUB_WEBHOOK_SECRET": stack.settings.github_webhook_secret.get_secret_value()
            if stack.settings.github_webhook_secret
            else "",
            "INSTALLATION": installation,
        }
        envs = " ".join(f"LEAK_{name}={value}" for name, value in secrets.items())
        result = await stack.command(
            fake.add_comment(repo, pull.number, "alice", f"/skyrun {envs}")
        )
        assert result.outcome == "started", result
        run_id = result.run_ids[0]
        progress = await stack.finished(run_id)
        assert progress.state is RunState.FAILED
        await slack.wait_for(
            lambda: any("Run failed" in m.text for m in slack.messages.values()), 30, "the end"
        )

        log = (stack.settings.logs_dir / run_id / "leak.log").read_text()
        pages = [
            (await stack.http.get(path)).text
            for path in (
                f"/runs/{run_id}",
                f"/api/runs/{run_id}",
                f"/runs/{run_id}/logs/leak",
                "/api/runs",
            )
        ]
        github = [
            *(h for c in fake.bot_comments(repo, pull.number) for h in c.history),
            *(str(run.history) for run in fake.check_runs_for(repo, result.commit)),
        ]
        slack_posts = [str(call.args) for call in slack.calls]

    assert f"installation={MASK}" in log and f"split={MASK}" in log
    assert f"gh={MASK} hook={MASK}" in log and f"report: {MASK} {MASK}" in log
    (sticky,) = [c for c in github if c.startswith("<!-- skyrun:run")][-1:]
    assert f"temporal={MASK} installation={MASK}" in sticky  # the failed stage's last lines
    assert any(f"slack={MASK}" in post for post in slack_posts)  # the Slack thread's tail
    assert f"report: {MASK} {MASK}" in pages[0]
    for where, texts in {"log store": [log], "pages": pages, "GitHub": github}.items():
        for text in texts:
            for name, value in secrets.items():
                assert value not in text, f"{name} reached the {where}"
    for post in slack_posts:
        for name, value in secrets.items():
            assert value not in post, f"{name} reached Slack"


# The stage log writer (run_stage) with a backend that leaks.


class LeakyBackend:
    """Writes a secret into the log in pieces, then fails with it in its error."""

    name = "leaky"

    def __init__(self, secret: str, fail: bool) -> None:
        self.secret, self.fail = secret.encode(), fail

    async def validate(self, task_yaml: str, envs: dict[str, str], checkout_dir: Path) -> None:
        return None

    async def run(self, task: TaskRun, log: BinaryIO) -> int:
        for piece in (b"token=" + self.secret[:5], self.secret[5:11], self.secret[11:] + b"\n"):
            log.write(piece)
            log.flush()
        log.write(b"::metric " + self.secret + b"=1\n::report\n" + self.secret + b"\n::endreport\n")
        if self.fail:
            raise BackendError(f"cloud said {self.secret.decode()}")
        return 0

    async def down(self, cluster_name: str) -> None:
        return None

    def dashboard_url(self) -> str:
        return ""


@pytest.mark.parametrize("fail", [False, True])
async def test_run_stage_writes_and_returns_only_masked_output(
    make_settings: Callable[..., Settings], git_repo: Callable[..., Path], fail: bool
) -> None:
    settings = make_settings(TEMPORAL_API_KEY="temporal-key-in-the-log")
    secret = "temporal-key-in-the-log"
    repo = git_repo({"a.yaml": "run: echo\n"})
    activities = PipelineActivities(settings, LeakyBackend(secret, fail))
    stage = PlannedStage("a", "a", "sr-a", "a.yaml", "run: echo\n", {}, launch=True)
    request = RunRequest(repo=str(repo), clone_url=str(repo), ref="main")
    data = StageInput("run-mask", request, "", stage, [], 30)
    env = ActivityEnvironment()
    if fail:
        with pytest.raises(ApplicationError) as caught:
            await env.run(activities.run_stage, data)
        assert caught.value.message == f"cloud said {MASK}"
    else:
        output = await env.run(activities.run_stage, data)
        assert output.report == MASK and output.metrics == {}
        assert f"token={MASK}" in output.log_tail
    log = (settings.logs_dir / "run-mask" / "a.log").read_text()
    assert f"token={MASK}\n" in log and secret not in log and secret[:5] not in log
