from __future__ import annotations

import pytest

from worker.limits import (
    MAX_LOG_LINE_BYTES,
    MAX_METRIC_NAME_CHARS,
    MAX_REPORT_BYTES,
    encoded_chars,
)
from worker.logparse import (
    MAX_METRICS,
    REPORT_TRUNCATED,
    parse_metrics,
    parse_report,
    strip_ansi,
    strip_prefix,
    tail_lines,
)
from worker.pipeline import MetricPattern

CYAN = "\x1b[36m"
RESET = "\x1b[0m"

# What `sky logs` shows for a single-node task: coloured prefixes, tqdm redraws, CRLF.
TRAIN_LOG = (
    f"{CYAN}(setup pid=2101){RESET} Installing requirements\n"
    f"{CYAN}(task, pid=2345){RESET} Epoch 1\r  10%|#         |\r 100%|##########|\n"
    f"{CYAN}(task, pid=2345){RESET} ::metric loss=0.91\n"
    f"{CYAN}(task, pid=2345){RESET} Metric - accuracy: 81.5%\n"
    f"{CYAN}(task, pid=2345){RESET}   ::metric loss = 0.42\r\n"
    f"{CYAN}(task, pid=2345){RESET} ::metric val/top-1:acc=9.5e-1\n"
    f"{CYAN}(task, pid=2345){RESET} Metric - accuracy: 93.25%\n"
    f"{CYAN}(task, pid=2345){RESET} ::report\n"
    f"{CYAN}(task, pid=2345){RESET} ## Eval\n"
    f"{CYAN}(task, pid=2345){RESET} \n"
    f"{CYAN}(task, pid=2345){RESET} | metric | value |\n"
    f"{CYAN}(task, pid=2345){RESET} |---|---|\n"
    f"{CYAN}(task, pid=2345){RESET} | accuracy | **93.25%** |\n"
    f"{CYAN}(task, pid=2345){RESET}  ::endreport  \n"
    f"{CYAN}(task, pid=2345){RESET} done\n"
    "\x1b[32m✓ Job finished (status: SUCCEEDED).\x1b[0m\n"
)


# --- strip_ansi / strip_prefix --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x1b[1m\x1b[31mred\x1b[0m plain", "red plain"),
        ("\x1b[38;5;208mcolour\x1b[39m", "colour"),
        ("\x1b[2K\x1b[1Gline", "line"),
        ("\x1b]0;title\x07text", "text"),
        ("\x1b]8;;https://x.test\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("a\x1b(Bb\x1b=c", "abc"),
        ("10%\r50%\r100%", "100%"),
        ("windows\r\nline\r\n", "windows\nline\n"),
        ("done\r", "done"),
        ("one\ntwo\r2b\nthree", "one\n2b\nthree"),
        ("keep\n\nblank", "keep\n\nblank"),
    ],
)
def test_strip_ansi(text: str, expected: str) -> None:
    assert strip_ansi(text) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("(task, pid=1234) hello", "hello"),
        ("(setup pid=99) pip install", "pip install"),
        ("(setup pid=99, ip=10.0.0.3) pip", "pip"),
        ("(worker1, rank=1, pid=5, ip=10.0.0.2) ::metric a=1", "::metric a=1"),
        ("(head, rank=0, pid=7)  indented", " indented"),
        ("(my-task.v2, pid=42) x", "x"),
        ("(task, pid=1)", ""),
        ("(task, pid=1) (head, rank=0, pid=7) nested", "nested"),
        ("(not a prefix) text", "(not a prefix) text"),
        ("(note) x", "(note) x"),
        ("text (task, pid=1) later", "text (task, pid=1) later"),
        ("", ""),
    ],
)
def test_strip_prefix(line: str, expected: str) -> None:
    assert strip_prefix(line) == expected


# --- metrics --------------------------------------------------------------------------------


def test_metrics_from_skypilot_log_last_wins() -> None:
    patterns = [MetricPattern("accuracy", r"Metric - accuracy: ([0-9.]+)%")]
    assert parse_metrics(TRAIN_LOG, patterns) == {
        "loss": 0.42,
        "val/top-1:acc": 0.95,
        "accuracy": 93.25,
    }


def test_metrics_without_patterns_ignore_pattern_lines() -> None:
    assert parse_metrics(TRAIN_LOG) == {"loss": 0.42, "val/top-1:acc": 0.95}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("::metric a=1", {"a": 1.0}),
        ("::metric a=-2.5", {"a": -2.5}),
        ("::metric a=+.5", {"a": 0.5}),
        ("::metric a=3.", {"a": 3.0}),
        ("::metric a=1E3", {"a": 1000.0}),
        ("\t::metric a=7  ", {"a": 7.0}),
        ("::metric a=0.5 [repeated 3x across cluster]", {"a": 0.5}),
        ("::metric a=nan", {}),
        ("::metric a=inf", {}),
        ("::metric a=-Infinity", {}),
        ("::metric a=1e999", {}),
        ("::metric a=1_000", {}),
        ("::metric a=0x10", {}),
        ("::metric a=", {}),
        ("::metric a=1 extra", {}),
        ("::metric a b=1", {}),
        ("::metric =1", {}),
        ("::metrics a=1", {}),
        ("echo ::metric a=1", {}),
        ("::metric a=1 ::metric b=2", {}),
    ],
)
def test_metric_line_forms(line: str, expected: dict[str, float]) -> None:
    assert parse_metrics(f"(task, pid=1) {line}\n") == expected


def test_metrics_from_multi_node_prefixes() -> None:
    log = (
        "(head, rank=0, pid=7) ::metric loss=0.3\n"
        "(worker1, rank=1, pid=5, ip=10.0.0.2) ::metric loss=0.4\n"
    )
    assert parse_metrics(log) == {"loss": 0.4}


def test_pattern_match_that_is_not_a_number_is_ignored() -> None:
    patterns = [MetricPattern("acc", r"acc: (\S+)")]
    log = "acc: 0.5\nacc: 1.2.3\nacc: n/a\nacc: nan\n"
    assert parse_metrics(log, patterns) == {"acc": 0.5}


def test_pattern_with_unmatched_optional_group_is_ignored() -> None:
    patterns = [MetricPattern("x", r"x(?:=([0-9]+))?")]
    assert parse_metrics("x=4\nx\n", patterns) == {"x": 4.0}


def test_pattern_searches_anywhere_and_anchors_after_prefix() -> None:
    patterns = [
        MetricPattern("f1", r"f1 ([0-9.]+)"),
        MetricPattern("step", r"^step ([0-9]+)$"),
    ]
    log = "\x1b[36m(task, pid=3)\x1b[0m epoch 2 f1 0.71 done\n(task, pid=3) step 12\n"
    assert parse_metrics(log, patterns) == {"f1": 0.71, "step": 12.0}


def test_metric_line_and_pattern_for_same_name_last_line_wins() -> None:
    patterns = [MetricPattern("acc", r"accuracy=([0-9.]+)")]
    assert parse_metrics("accuracy=0.1\n::metric acc=0.2\n", patterns) == {"acc": 0.2}
    assert parse_metrics("::metric acc=0.2\naccuracy=0.1\n", patterns) == {"acc": 0.1}


def test_metric_names_are_capped_but_known_ones_still_update() -> None:
    lines = [f"::metric m{i}={i}" for i in range(MAX_METRICS + 50)] + ["::metric m0=99"]
    metrics = parse_metrics("\n".join(lines))
    assert len(metrics) == MAX_METRICS
    assert metrics["m0"] == 99.0
    assert f"m{MAX_METRICS}" not in metrics


def test_no_metrics_in_empty_log() -> None:
    assert parse_metrics("") == {}


# --- report ---------------------------------------------------------------------------------


def test_report_from_skypilot_log() -> None:
    assert parse_report(TRAIN_LOG) == (
        "## Eval\n\n| metric | value |\n|---|---|\n| accuracy | **93.25%** |"
    )


def test_several_report_blocks_join_with_blank_line() -> None:
    log = (
        "(task, pid=1) ::report\n(task, pid=1) first\n(task, pid=1) ::endreport\n"
        "noise\n"
        "::report\n\n\nsecond  \n  indented\n::endreport\n"
        "::report\n::endreport\n"
    )
    assert parse_report(log) == "first\n\nsecond  \n  indented"


def test_unterminated_report_runs_to_the_end() -> None:
    assert parse_report("a\n::report\n- one\n- two\n") == "- one\n- two"


def test_stray_markers_are_ignored() -> None:
    log = "::endreport\n::report\nx\n::report\ny\n::endreport\n::endreport\n"
    assert parse_report(log) == "x\ny"


def test_markers_must_be_alone_on_their_line() -> None:
    assert parse_report("echo ::report\nx\n::report now\n") == ""


def test_no_report() -> None:
    assert parse_report(TRAIN_LOG.replace("::report", "report")) == ""


def test_report_truncated_at_a_line_boundary() -> None:
    body = "\n".join(f"line {i:03d}" for i in range(100))  # 8 chars a line
    report = parse_report(f"::report\n{body}\n::endreport\n", limit=100)
    assert report == "\n".join(f"line {i:03d}" for i in range(7)) + "\n" + REPORT_TRUNCATED
    assert encoded_chars(report) <= 100  # the limit is encoded bytes: "…" takes 6
    assert REPORT_TRUNCATED == "… (report truncated)"


def test_report_exactly_at_limit_is_not_truncated() -> None:
    assert parse_report("::report\n" + "x" * 50, limit=50) == "x" * 50


def test_truncated_report_closes_an_open_code_fence() -> None:
    body = "```\n" + "\n".join(f"row {i:04d}" for i in range(50)) + "\n```"
    report = parse_report(f"::report\n{body}\n::endreport", limit=60)
    assert report == "```\nrow 0000\nrow 0001\n```\n" + REPORT_TRUNCATED
    assert encoded_chars(report) <= 60


def test_truncated_single_long_line_is_cut() -> None:
    report = parse_report("::report\n" + "y" * 1000, limit=50)
    assert report == "y" * 24 + "\n" + REPORT_TRUNCATED


# --- tail -----------------------------------------------------------------------------------


def test_tail_lines_keeps_last_non_empty_lines() -> None:
    assert tail_lines(TRAIN_LOG, count=3) == [
        "(task, pid=2345)  ::endreport",
        "(task, pid=2345) done",
        "✓ Job finished (status: SUCCEEDED).",
    ]


def test_tail_lines_redraws_and_width() -> None:
    log = "a\n\n   \nprogress 10%\rprogress 100%\n" + "z" * 30 + "\n\n"
    assert tail_lines(log, count=5, width=10) == ["a", "progress 1", "z" * 10]


def test_results_are_bounded_as_temporal_encodes_them() -> None:
    # Emoji take 12 bytes each in a Temporal payload, control characters 6.
    hostile = "\U0001f600\x01" * 50_000
    report = parse_report(f"::report\n{hostile}\n::endreport\n")
    assert report.endswith(REPORT_TRUNCATED)
    assert MAX_REPORT_BYTES - 300 < encoded_chars(report) <= MAX_REPORT_BYTES
    tail = tail_lines(f"{hostile}\n" * 30)
    assert len(tail) == 20
    assert all(MAX_LOG_LINE_BYTES - 12 < encoded_chars(line) <= MAX_LOG_LINE_BYTES for line in tail)


def test_metric_names_longer_than_the_limit_are_not_metrics() -> None:
    name = "m" * MAX_METRIC_NAME_CHARS
    assert parse_metrics(f"::metric {name}=1\n::metric {name}x=2\n") == {name: 1.0}


def test_tail_lines_edge_counts() -> None:
    assert tail_lines("a\nb\n", count=0) == []
    assert tail_lines("", count=5) == []
    assert tail_lines("one", count=5) == ["one"]


def test_tail_lines_default_count_is_twenty() -> None:
    log = "\n".join(str(i) for i in range(50))
    assert tail_lines(log) == [str(i) for i in range(30, 50)]
