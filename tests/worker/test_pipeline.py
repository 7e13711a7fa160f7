from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import yaml

from worker import pipeline as p
from worker.pipeline import (
    DEFAULT_STAGES,
    PIPELINE_FILE,
    MetricPattern,
    Pipeline,
    PipelineError,
    Stage,
    branch_matches,
    clusters_after,
    default_pipeline,
    load_pipeline,
    merge_envs,
    parse_env_assignments,
    parse_pipeline,
    select_stages,
)

DESIGN_EXAMPLE = """\
on:
  push: [main, "release/*"]
  pull_request: false
stages:
  - name: preprocess
    task: data_preprocessing.yaml
  - name: train
    task: train.yaml
    cluster: train
  - name: eval
    task: eval.yaml
    cluster: train
envs: {DATA_BUCKET_URL: ""}
metrics:
  - {name: accuracy, pattern: 'Metric - accuracy: ([0-9.]+)%'}
notify: {slack: "#ml-runs"}
autostop_minutes: 30
timeout_minutes: 180
"""

TOP_KNOWN = "on, stages, envs, metrics, notify, autostop_minutes, timeout_minutes"
STAGE_RULE = "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"


def error_of(text: str, file: str = PIPELINE_FILE) -> PipelineError:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, file)
    return info.value


def seed_stages() -> list[Stage]:
    return [
        Stage("preprocess", "data_preprocessing.yaml", "preprocess"),
        Stage("train", "train.yaml", "train"),
        Stage("eval", "eval.yaml", "train"),
    ]


# --- parsing a valid file -------------------------------------------------------------------


def test_design_example_parses() -> None:
    assert parse_pipeline(DESIGN_EXAMPLE) == Pipeline(
        stages=seed_stages(),
        on_push=["main", "release/*"],
        on_pull_request=False,
        envs={"DATA_BUCKET_URL": ""},
        metrics=[MetricPattern("accuracy", "Metric - accuracy: ([0-9.]+)%")],
        notify_slack="#ml-runs",
        autostop_minutes=30,
        timeout_minutes=180,
        from_file=True,
    )


def test_bare_on_key_read_as_true_by_yaml_is_accepted() -> None:
    text = "on:\n  push: release/*\n  pull_request: true\nstages:\n  - {name: a, task: a.yml}\n"
    pipeline = parse_pipeline(text)
    assert pipeline.on_push == ["release/*"]
    assert pipeline.on_pull_request is True


def test_yaml_itself_reads_bare_on_as_true() -> None:
    # The trap the parser must survive: a plain loader turns the key into the boolean True.
    assert yaml.safe_load("on: {push: [main]}\n") == {True: {"push": ["main"]}}
    assert parse_pipeline("on: {push: [main]}\n").on_push == ["main"]


def test_quoted_on_key_is_accepted_too() -> None:
    assert parse_pipeline('"on": {push: [dev]}\n').on_push == ["dev"]


def test_on_without_push_keeps_default_branch_meaning() -> None:
    pipeline = parse_pipeline("on: {pull_request: yes}\n")
    assert pipeline.on_push is None
    assert pipeline.on_pull_request is True


def test_empty_push_list_means_never_on_push() -> None:
    assert parse_pipeline("on: {push: []}\n").on_push == []


def test_file_without_stages_uses_default_stages() -> None:
    pipeline = parse_pipeline("timeout_minutes: 60\n")
    assert pipeline.stages == seed_stages()
    assert pipeline.timeout_minutes == 60
    assert pipeline.from_file is True


def test_cluster_defaults_to_stage_name() -> None:
    pipeline = parse_pipeline("stages:\n  - name: fit\n    task: jobs/fit.yml\n")
    assert pipeline.stages == [Stage("fit", "jobs/fit.yml", "fit")]


def test_scalars_that_look_like_booleans_or_numbers_stay_as_written() -> None:
    text = (
        "on: {push: [1.10, yes]}\n"
        "stages:\n"
        "  - {name: true, task: a.yaml, cluster: 007}\n"
        "  - {name: 1.10, task: b.yaml}\n"
        "envs: {A: 1.10, B: true, C: null, D: 0x1F, E: ~, F: plain}\n"
    )
    pipeline = parse_pipeline(text)
    assert pipeline.on_push == ["1.10", "yes"]
    assert pipeline.stages == [Stage("true", "a.yaml", "007"), Stage("1.10", "b.yaml", "1.10")]
    assert pipeline.envs == {"A": "1.10", "B": "true", "C": "", "D": "0x1F", "E": "", "F": "plain"}


def test_positive_int_accepts_yaml_int_forms() -> None:
    pipeline = parse_pipeline("autostop_minutes: 0x10\ntimeout_minutes: 1_000\n")
    assert (pipeline.autostop_minutes, pipeline.timeout_minutes) == (16, 1000)


def test_slack_channel_id_is_accepted() -> None:
    assert parse_pipeline("notify: {slack: C0123456789}\n").notify_slack == "C0123456789"
    assert parse_pipeline("notify: {}\n").notify_slack == ""


def test_custom_file_name_appears_in_errors() -> None:
    error = error_of("stagez: 1\n", file="ci/.skyrun.yaml")
    assert str(error).startswith("ci/.skyrun.yaml:1: unknown key 'stagez'")


# --- errors: file, line and problem ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("stagez: 1\n", 1, f"unknown key 'stagez' (known: {TOP_KNOWN})"),
        ("stages: []\nstages: []\n", 2, "duplicate key 'stages'"),
        ("? [a]\n: 1\n", 1, "keys must be plain names"),
        ("- a\n", 1, "the top level must be a mapping with keys such as 'on:' and 'stages:'"),
        ("on: push\n", 1, "on must be a mapping, not a string"),
        ("on: {push: main, tags: [v1]}\n", 1, "on: unknown key 'tags' (known: push, pull_request)"),
        ("on:\n  push:\n", 2, "on.push must be a branch glob or a list of them, not a null"),
        (
            "on:\n  push: {a: 1}\n",
            2,
            "on.push must be a branch glob or a list of them, not a mapping",
        ),
        ("on:\n  push: [main, [x]]\n", 2, "on.push[1] must be a string, not a list"),
        ("on:\n  push: [main, '']\n", 2, "on.push[1] must not be empty"),
        ("on:\n  pull_request: 'true'\n", 2, "on.pull_request must be true or false"),
        ("\n\nstages: {a: b}\n", 3, "stages must be a list, not a mapping"),
        ("stages: []\n", 1, "stages must list at least one stage"),
        ("stages:\n  - train.yaml\n", 2, "stages[0] must be a mapping, not a string"),
        (
            "stages:\n  - name: a\n    task: a.yaml\n  - name: b\n",
            4,
            "stages[1]: 'task' is required",
        ),
        ("stages:\n  - task: a.yaml\n", 2, "stages[0]: 'name' is required"),
        (
            "stages:\n  - name: a\n    task: a.yaml\n    clutser: x\n",
            4,
            "stages[0]: unknown key 'clutser' (known: name, task, cluster)",
        ),
        ("stages:\n  - name:\n    task: a.yaml\n", 2, "stages[0].name must not be empty"),
        (
            "stages:\n  - name: [a]\n    task: a.yaml\n",
            2,
            "stages[0].name must be a string, not a list",
        ),
        (
            "stages:\n  - name: my stage\n    task: a.yaml\n",
            2,
            f"stage names {STAGE_RULE} (got 'my stage')",
        ),
        ("stages:\n  - name: ..\n    task: a.yaml\n", 2, f"stage names {STAGE_RULE} (got '..')"),
        (
            "stages:\n  - name: a\n    task: a.yaml\n    cluster: -x\n",
            4,
            f"cluster names {STAGE_RULE} (got '-x')",
        ),
        (
            "stages:\n  - {name: train, task: a.yaml}\n  - {name: train, task: b.yaml}\n",
            3,
            "duplicate stage name 'train'",
        ),
        (
            "stages:\n  - name: a\n    task: a.json\n",
            3,
            "stages[0].task must name a .yaml or .yml file (got 'a.json')",
        ),
        (
            "stages:\n  - name: a\n    task: ../other/a.yaml\n",
            3,
            "stages[0].task must be a relative path inside the repository, without '..' or "
            "control characters (got '../other/a.yaml')",
        ),
        (
            "stages:\n  - name: a\n    task: /etc/a.yaml\n",
            3,
            "stages[0].task must be a relative path inside the repository, without '..' or "
            "control characters (got '/etc/a.yaml')",
        ),
        (
            'stages:\n  - name: a\n    task: "a\\0.yaml"\n',
            3,
            "stages[0].task must be a relative path inside the repository, without '..' or "
            "control characters (got 'a\\x00.yaml')",
        ),
        ("envs: [A]\n", 1, "envs must be a mapping, not a list"),
        (
            "envs:\n  1A: x\n",
            2,
            "envs: '1A' is not a valid environment variable name (letters, digits and '_', "
            "not starting with a digit)",
        ),
        ("envs:\n  A: 1\n  A: 2\n", 3, "envs: duplicate key 'A'"),
        ("envs:\n  A:\n    b: c\n", 3, "envs.A must be a string, number or boolean, not a mapping"),
        ("metrics: {a: b}\n", 1, "metrics must be a list, not a mapping"),
        ("metrics:\n  - {name: a}\n", 2, "metrics[0]: 'pattern' is required"),
        (
            "metrics:\n  - {name: a b, pattern: '(x)'}\n",
            2,
            "metrics[0].name must contain only letters, digits, '_', '.', ':', '/' and '-' "
            "(got 'a b')",
        ),
        (
            "metrics:\n  - name: a\n    pattern: '([0-9'\n",
            3,
            "metrics[0].pattern: invalid regex: unterminated character set at position 1",
        ),
        (
            "metrics:\n  - {name: a, pattern: 'loss [0-9.]+'}\n",
            2,
            "metrics[0].pattern must have exactly one capture group (it has 0)",
        ),
        (
            "metrics:\n  - {name: a, pattern: '(a)=(b)'}\n",
            2,
            "metrics[0].pattern must have exactly one capture group (it has 2)",
        ),
        ("notify: '#ml'\n", 1, "notify must be a mapping, not a string"),
        (
            "notify:\n  slack: #ml-runs\n",
            2,
            'notify.slack is empty: quote the channel, as in slack: "#ml-runs" '
            "(an unquoted # starts a YAML comment)",
        ),
        (
            "notify:\n  slack: ml runs\n",
            2,
            "notify.slack must be a channel like '#ml-runs' or a channel ID like 'C0123456789' "
            "(got 'ml runs')",
        ),
        ("notify:\n  email: a@b\n", 2, "notify: unknown key 'email' (known: slack)"),
        ("timeout_minutes: 0\n", 1, "timeout_minutes must be a positive integer"),
        ("timeout_minutes: -5\n", 1, "timeout_minutes must be a positive integer"),
        ("timeout_minutes: 1.5\n", 1, "timeout_minutes must be a positive integer"),
        ("timeout_minutes: '30'\n", 1, "timeout_minutes must be a positive integer"),
        ("autostop_minutes: true\n", 1, "autostop_minutes must be a positive integer"),
        ("a: b\n c: d\n", 2, "invalid YAML: mapping values are not allowed here"),
        ("stages: [a\n", 2, "invalid YAML: expected ',' or ']', but got '<stream end>'"),
        (
            "stages: []\n---\nstages: []\n",
            2,
            "invalid YAML: expected a single document in the stream, but found another document",
        ),
        ("\tstages: []\n", 1, "invalid YAML: found character '\\t' that cannot start any token"),
        (
            "envs:\n  A: '\x01'\n",
            2,
            "invalid YAML: unacceptable character #x0001: special characters are not allowed",
        ),
    ],
)
def test_errors_name_file_line_and_problem(text: str, line: int, problem: str) -> None:
    error = error_of(text)
    assert (error.file, error.line, error.problem) == (PIPELINE_FILE, line, problem)
    assert str(error) == f"{PIPELINE_FILE}:{line}: {problem}"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_an_error(text: str) -> None:
    error = error_of(text)
    assert (error.line, error.problem) == (None, p.E_EMPTY_FILE)
    assert str(error) == f"{PIPELINE_FILE}: {p.E_EMPTY_FILE}"


def test_file_over_256_kib_is_rejected() -> None:
    text = "# " + "x" * (256 * 1024) + "\n"
    error = error_of(text)
    assert error.problem == f"the file is {len(text)} bytes; the limit is 262144 bytes (256 KiB)"
    assert error.line is None


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    error = error_of("[" * 20000 + "]" * 20000)
    assert (error.line, error.problem) == (None, "invalid YAML: nested too deeply")


def test_long_values_are_cut_in_errors() -> None:
    error = error_of("k" * 500 + ": 1\n")
    assert error.problem == f"unknown key '{'k' * 60}…' (known: {TOP_KNOWN})"


def test_pipeline_error_without_line_and_pickles() -> None:
    error = PipelineError("boom")
    assert (str(error), error.file, error.line) == (".skyrun.yaml: boom", PIPELINE_FILE, None)
    copy = pickle.loads(pickle.dumps(PipelineError("bad", "f.yaml", 3)))
    assert (str(copy), copy.problem, copy.file, copy.line) == ("f.yaml:3: bad", "bad", "f.yaml", 3)


# --- defaults and loading from a checkout ---------------------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


SEED_TASKS = {"data_preprocessing.yaml": "run: echo", "train.yaml": "run: x", "eval.yaml": "run: y"}


def test_default_pipeline_is_the_seed() -> None:
    pipeline = default_pipeline()
    assert pipeline == Pipeline(stages=seed_stages())
    assert pipeline.on_push is None
    assert pipeline.from_file is False
    assert (pipeline.autostop_minutes, pipeline.timeout_minutes) == (30, 180)


def test_default_pipeline_returns_fresh_stages() -> None:
    default_pipeline().stages[0].task = "changed.yaml"
    assert default_pipeline().stages[0].task == "data_preprocessing.yaml"
    assert DEFAULT_STAGES[0].task == "data_preprocessing.yaml"


def test_load_without_file_uses_defaults(tmp_path: Path) -> None:
    write(tmp_path, SEED_TASKS)
    assert load_pipeline(tmp_path) == default_pipeline()


def test_load_without_file_and_missing_seed_task_says_why(tmp_path: Path) -> None:
    write(tmp_path, {"data_preprocessing.yaml": "run: x", "eval.yaml": "run: y"})
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert info.value.line is None
    assert info.value.problem == (
        "stage 'train': task file train.yaml not found in the repository (there is no "
        ".skyrun.yaml, so the default stages preprocess, train and eval are used; add a "
        ".skyrun.yaml that lists your stages)"
    )


def test_load_parses_the_file(tmp_path: Path) -> None:
    write(tmp_path, {PIPELINE_FILE: DESIGN_EXAMPLE, **SEED_TASKS})
    assert load_pipeline(tmp_path) == parse_pipeline(DESIGN_EXAMPLE)


def test_load_missing_task_file_names_the_stage_line(tmp_path: Path) -> None:
    write(tmp_path, {PIPELINE_FILE: DESIGN_EXAMPLE, "data_preprocessing.yaml": "", "eval.yaml": ""})
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert str(info.value) == (
        ".skyrun.yaml:8: stage 'train': task file train.yaml not found in the repository"
    )


def test_load_file_without_stages_hints_at_defaults(tmp_path: Path) -> None:
    write(tmp_path, {PIPELINE_FILE: "timeout_minutes: 5\n"})
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert info.value.problem == (
        "stage 'preprocess': task file data_preprocessing.yaml not found in the repository"
        + p.NO_STAGES_HINT
    )


def test_load_task_in_subdirectory(tmp_path: Path) -> None:
    write(tmp_path, {PIPELINE_FILE: "stages:\n  - {name: a, task: ./jobs/a.yml}\n"})
    write(tmp_path, {"jobs/a.yml": "run: x"})
    assert load_pipeline(tmp_path).stages == [Stage("a", "./jobs/a.yml", "a")]


def test_load_task_that_is_a_directory(tmp_path: Path) -> None:
    write(tmp_path, {PIPELINE_FILE: "stages:\n  - {name: a, task: a.yaml}\n"})
    (tmp_path / "a.yaml").mkdir()
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert str(info.value) == ".skyrun.yaml:2: stage 'a': task file a.yaml is not a regular file"


def test_load_task_symlink_escaping_the_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(tmp_path, {"secret.yaml": "token: x"})
    write(repo, {PIPELINE_FILE: "stages:\n  - name: a\n    task: a.yaml\n"})
    os.symlink(tmp_path / "secret.yaml", repo / "a.yaml")
    with pytest.raises(PipelineError) as info:
        load_pipeline(repo)
    assert str(info.value) == (
        ".skyrun.yaml:3: stage 'a': task file a.yaml points outside the repository (or in a loop)"
    )


def test_load_task_through_symlinked_directory_escaping(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(tmp_path, {"outside/a.yaml": "run: x"})
    write(repo, {PIPELINE_FILE: "stages:\n  - {name: a, task: jobs/a.yaml}\n"})
    os.symlink(tmp_path / "outside", repo / "jobs")
    with pytest.raises(PipelineError) as info:
        load_pipeline(repo)
    assert (
        info.value.problem
        == "stage 'a': task file jobs/a.yaml points outside the repository (or in a loop)"
    )


def test_load_task_symlink_inside_is_fine(tmp_path: Path) -> None:
    write(tmp_path, {PIPELINE_FILE: "stages:\n  - {name: a, task: a.yaml}\n", "real.yaml": ""})
    os.symlink(tmp_path / "real.yaml", tmp_path / "a.yaml")
    assert load_pipeline(tmp_path).stages == [Stage("a", "a.yaml", "a")]


def test_load_pipeline_file_symlink_escaping_the_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(tmp_path, {"creds": "password: hunter2\n"})
    repo.mkdir()
    os.symlink(tmp_path / "creds", repo / PIPELINE_FILE)
    with pytest.raises(PipelineError) as info:
        load_pipeline(repo)
    assert str(info.value) == f"{PIPELINE_FILE}: {p.E_FILE_OUTSIDE}"
    assert p.E_FILE_OUTSIDE == (
        "the file is a symbolic link that points outside the repository (or in a loop)"
    )


def test_load_task_symlink_loop(tmp_path: Path) -> None:
    write(tmp_path, {PIPELINE_FILE: "stages:\n  - {name: a, task: a.yaml}\n"})
    os.symlink(tmp_path / "b.yaml", tmp_path / "a.yaml")
    os.symlink(tmp_path / "a.yaml", tmp_path / "b.yaml")
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert str(info.value) == (
        ".skyrun.yaml:2: stage 'a': task file a.yaml points outside the repository (or in a loop)"
    )


def test_load_dangling_pipeline_symlink_is_not_the_default(tmp_path: Path) -> None:
    os.symlink(tmp_path / "missing.yaml", tmp_path / PIPELINE_FILE)
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert info.value.problem == "the path is not a regular file"


def test_load_rejects_large_and_non_utf8_files(tmp_path: Path) -> None:
    (tmp_path / PIPELINE_FILE).write_bytes(b"x" * (256 * 1024 + 1))
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert info.value.problem == "the file is 262145 bytes; the limit is 262144 bytes (256 KiB)"
    (tmp_path / PIPELINE_FILE).write_bytes(b"stages: \xff\n")
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert info.value.problem == "the file is not UTF-8 text"


def test_load_reports_parse_errors(tmp_path: Path) -> None:
    write(tmp_path, {PIPELINE_FILE: "on:\n  push: main\nstagez: []\n"})
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert str(info.value) == f".skyrun.yaml:3: unknown key 'stagez' (known: {TOP_KNOWN})"


# --- stage selection and cluster lifetimes --------------------------------------------------


def test_select_all_stages_in_file_order() -> None:
    pipeline = default_pipeline()
    assert select_stages(pipeline, []) == seed_stages()
    assert select_stages(pipeline, []) is not pipeline.stages


def test_select_keeps_pipeline_order_and_drops_repeats() -> None:
    selected = select_stages(default_pipeline(), ["eval", "preprocess", "eval"])
    assert [stage.name for stage in selected] == ["preprocess", "eval"]


def test_select_unknown_stage_lists_known_ones() -> None:
    with pytest.raises(PipelineError) as info:
        select_stages(default_pipeline(), ["train", "tran"])
    assert str(info.value) == (
        ".skyrun.yaml: unknown stage 'tran' (known: preprocess, train, eval)"
    )
    with pytest.raises(PipelineError) as info:
        select_stages(default_pipeline(), ["x", "y", "x"])
    assert info.value.problem == "unknown stages 'x', 'y' (known: preprocess, train, eval)"


def test_clusters_after_for_shared_train_cluster() -> None:
    stages = seed_stages()
    assert clusters_after(stages, -1) == {"preprocess", "train"}
    assert clusters_after(stages, 0) == {"train"}  # preprocess can go down after stage 0
    assert clusters_after(stages, 1) == {"train"}  # eval still needs train
    assert clusters_after(stages, 2) == set()


def test_clusters_after_a_selection() -> None:
    stages = select_stages(default_pipeline(), ["preprocess", "eval"])
    assert clusters_after(stages, 0) == {"train"}
    assert clusters_after(stages, 1) == set()


# --- envs -----------------------------------------------------------------------------------


def test_merge_envs_precedence() -> None:
    merged = merge_envs(
        {"A": "task", "B": "task", "C": "task", "ONLY_TASK": "t"},
        {"B": "pipeline", "C": "pipeline", "ONLY_PIPELINE": "p"},
        "",
        {"C": "trigger", "ONLY_TRIGGER": "x"},
    )
    assert merged == {
        "A": "task",
        "B": "pipeline",
        "C": "trigger",
        "ONLY_TASK": "t",
        "ONLY_PIPELINE": "p",
        "ONLY_TRIGGER": "x",
    }


def test_merge_envs_bucket_fills_missing_or_empty() -> None:
    bucket = "s3://data"
    assert merge_envs({}, {}, bucket, {}) == {"DATA_BUCKET_URL": bucket}
    assert merge_envs({}, {"DATA_BUCKET_URL": ""}, bucket, {}) == {"DATA_BUCKET_URL": bucket}
    assert merge_envs({"DATA_BUCKET_URL": None}, {}, bucket, {}) == {"DATA_BUCKET_URL": bucket}
    assert merge_envs({"DATA_BUCKET_URL": ""}, {}, bucket, {}) == {"DATA_BUCKET_URL": bucket}


def test_merge_envs_bucket_does_not_override_a_set_value() -> None:
    assert merge_envs({"DATA_BUCKET_URL": "gs://task"}, {}, "s3://b", {}) == {
        "DATA_BUCKET_URL": "gs://task"
    }
    assert merge_envs({}, {"DATA_BUCKET_URL": "gs://pipe"}, "s3://b", {}) == {
        "DATA_BUCKET_URL": "gs://pipe"
    }


def test_merge_envs_trigger_always_wins_even_over_bucket() -> None:
    assert merge_envs({}, {"DATA_BUCKET_URL": ""}, "s3://b", {"DATA_BUCKET_URL": ""}) == {
        "DATA_BUCKET_URL": ""
    }
    assert merge_envs({}, {}, "s3://b", {"DATA_BUCKET_URL": "gs://mine"}) == {
        "DATA_BUCKET_URL": "gs://mine"
    }


def test_merge_envs_without_bucket_keeps_empty_value() -> None:
    assert merge_envs({}, {"DATA_BUCKET_URL": ""}, "", {}) == {"DATA_BUCKET_URL": ""}
    assert merge_envs({}, {}, "", {}) == {}


def test_merge_envs_required_task_env_stays_absent_unless_supplied() -> None:
    assert merge_envs({"TOKEN": None, "A": "1"}, {}, "", {}) == {"A": "1"}
    assert merge_envs({"TOKEN": None}, {}, "", {"TOKEN": "t"}) == {"TOKEN": "t"}
    assert merge_envs({"TOKEN": None}, {"TOKEN": "p"}, "", {}) == {"TOKEN": "p"}


def test_parse_env_assignments() -> None:
    assert parse_env_assignments([]) == {}
    assert parse_env_assignments(["A=1", "_B=x=y", "EMPTY=", "A=2"]) == {
        "A": "2",
        "_B": "x=y",
        "EMPTY": "",
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train", "expected KEY=VALUE, got 'train'"),
        (
            "1A=secret",
            "'1A' is not a valid environment variable name (letters, digits and '_', "
            "not starting with a digit)",
        ),
        (
            "=secret",
            "'' is not a valid environment variable name (letters, digits and '_', "
            "not starting with a digit)",
        ),
        (
            "MY-KEY=secret",
            "'MY-KEY' is not a valid environment variable name (letters, digits and '_', "
            "not starting with a digit)",
        ),
    ],
)
def test_parse_env_assignments_errors_never_echo_values(item: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_env_assignments(["OK=1", item])
    assert str(info.value) == message
    assert "secret" not in str(info.value)


# --- branches -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("globs", "branch", "expected"),
    [
        (None, "main", True),
        (None, "dev", False),
        (None, "", False),
        ([], "main", False),
        (["main", "release/*"], "main", True),
        (["main", "release/*"], "release/1.2", True),
        (["main", "release/*"], "release", False),
        (["main", "release/*"], "Main", False),
        (["feat-?"], "feat-a", True),
        (["feat-?"], "feat-ab", False),
        (["*"], "anything/at/all", True),
    ],
)
def test_branch_matches(globs: list[str] | None, branch: str, expected: bool) -> None:
    assert branch_matches(globs, branch, "main") is expected
