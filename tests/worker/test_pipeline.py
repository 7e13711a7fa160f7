from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from worker import pipeline as p
from worker.limits import (
    MAX_ENV_VALUE_CHARS,
    MAX_ENVS,
    MAX_METRIC_NAME_CHARS,
    MAX_PIPELINE_TASKS_BYTES,
    MAX_STAGE_NAME_CHARS,
    MAX_STAGES,
    MAX_TASK_FILE_BYTES,
    MAX_YAML_ALIAS_NODES,
    MAX_YAML_DEPTH,
)
from worker.pipeline import (
    DEFAULT_STAGES,
    PIPELINE_FILE,
    TOP_KEYS,
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
    read_task_files,
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

TOP_KNOWN = ", ".join(TOP_KEYS)
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


def test_merge_group_is_off_unless_set_true() -> None:
    assert parse_pipeline("on: {push: [main]}\n").on_merge_group is False
    assert parse_pipeline("on: {merge_group: true}\n").on_merge_group is True
    assert parse_pipeline("on: {merge_group: false}\n").on_merge_group is False


def test_empty_push_list_means_never_on_push() -> None:
    assert parse_pipeline("on: {push: []}\n").on_push == []


def test_file_without_stages_uses_default_stages() -> None:
    pipeline = parse_pipeline("timeout_minutes: 60\n")
    assert pipeline.stages == seed_stages()
    assert pipeline.timeout_minutes == 60
    assert pipeline.from_file is True


def test_infrastructure_failures_are_retried_twice_unless_the_file_says() -> None:
    assert parse_pipeline("envs: {}\n").max_infra_retries == 2
    assert parse_pipeline("max_infra_retries: 0\n").max_infra_retries == 0
    assert parse_pipeline("max_infra_retries: 10\n").max_infra_retries == 10


def test_warm_minutes_managed_and_prelaunch_default_as_designed() -> None:
    pipeline = parse_pipeline("stages:\n  - {name: fit, task: fit.yaml}\n")
    assert pipeline.keep_warm_minutes == 0
    assert (pipeline.stages[0].managed, pipeline.stages[0].prelaunch) == (False, True)
    pipeline = parse_pipeline(
        "keep_warm_minutes: 1440\n"
        "stages:\n  - {name: fit, task: fit.yaml, managed: true, prelaunch: false}\n"
    )
    assert pipeline.keep_warm_minutes == 1440
    assert (pipeline.stages[0].managed, pipeline.stages[0].prelaunch) == (True, False)


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
        (
            "on: {push: main, tags: [v1]}\n",
            1,
            "on: unknown key 'tags' (known: push, pull_request, merge_group)",
        ),
        ("on:\n  push:\n", 2, "on.push must be a branch glob or a list of them, not a null"),
        (
            "on:\n  push: {a: 1}\n",
            2,
            "on.push must be a branch glob or a list of them, not a mapping",
        ),
        ("on:\n  push: [main, [x]]\n", 2, "on.push[1] must be a string, not a list"),
        ("on:\n  push: [main, '']\n", 2, "on.push[1] must not be empty"),
        ("on:\n  pull_request: 'true'\n", 2, "on.pull_request must be true or false"),
        ("on:\n  merge_group: 1\n", 2, "on.merge_group must be true or false"),
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
            "stages[0]: unknown key 'clutser' "
            "(known: name, task, cluster, needs, managed, prelaunch)",
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
        ("max_infra_retries: -1\n", 1, "max_infra_retries must be a whole number from 0 to 10"),
        ("max_infra_retries: 11\n", 1, "max_infra_retries must be a whole number from 0 to 10"),
        (
            "envs: {}\nmax_infra_retries: yes\n",
            2,
            "max_infra_retries must be a whole number from 0 to 10",
        ),
        ("max_infra_retries: '2'\n", 1, "max_infra_retries must be a whole number from 0 to 10"),
        (
            "keep_warm_minutes: -1\n",
            1,
            "keep_warm_minutes must be a whole number of minutes from 0 to 1440 (got '-1')",
        ),
        (
            "envs: {}\nkeep_warm_minutes: 1441\n",
            2,
            "keep_warm_minutes must be a whole number of minutes from 0 to 1440 (got '1441')",
        ),
        (
            "keep_warm_minutes: [5]\n",
            1,
            "keep_warm_minutes must be a whole number of minutes from 0 to 1440 (got a list)",
        ),
        (
            "stages:\n  - name: fit\n    task: fit.yaml\n    managed: 'yes'\n",
            4,
            "stages[0].managed must be true or false",
        ),
        (
            "stages:\n  - name: fit\n    task: fit.yaml\n    prelaunch: 1\n",
            4,
            "stages[0].prelaunch must be true or false",
        ),
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
    assert error.problem == (
        f"the file is {len(text):,} bytes long; the limit is 262,144: a pipeline file holds "
        "settings, not data; make it smaller"
    )
    assert error.line is None


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    error = error_of("[" * 20000 + "]" * 20000)
    assert (error.line, error.problem) == (1, p.E_TOO_DEEP.format(limit=MAX_YAML_DEPTH))


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
    assert info.value.problem.startswith("the file is 262,145 bytes long; the limit is 262,144")
    (tmp_path / PIPELINE_FILE).write_bytes(b"on: {}\nstages: \xff\n")
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert (info.value.line, info.value.problem) == (2, p.E_NOT_UTF8.format(byte=0xFF))


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


# -- hostile files: sizes, encodings, YAML bombs ---------------------------------------------------


def billion_laughs(levels: int = 9, indent: str = "") -> str:
    """The classic YAML bomb: each level an anchor of nine aliases of the one before."""
    lines = [f'{indent}l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        aliases = ",".join([f"*l{level - 1}"] * 9)
        lines.append(f"{indent}l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_in_the_pipeline_file_is_refused_at_its_line() -> None:
    text = "envs:\n" + billion_laughs(indent="  ")
    error = error_of(text)
    assert error.problem == p.E_YAML_ALIASES.format(limit=MAX_YAML_ALIAS_NODES)
    assert error.line == 6  # l0..l3 add 8,289 values; l4 adds 66,429 more: past the budget
    assert len(text) < 500


def test_billion_laughs_task_file_is_refused_before_anything_parses_it(tmp_path: Path) -> None:
    write(tmp_path, {"bomb.yaml": billion_laughs() + "run: echo hi\n"})
    stages = [Stage("train", "bomb.yaml", "train")]
    with pytest.raises(PipelineError) as info:
        read_task_files(tmp_path, stages)
    assert (info.value.file, info.value.line) == ("bomb.yaml", 5)
    assert str(info.value).startswith("bomb.yaml:5: invalid YAML: aliases (*name) would expand")


def test_modest_anchors_and_aliases_still_work(tmp_path: Path) -> None:
    task = "envs: &common {A: '1', B: '2'}\nsetup: echo\nrun: echo\nconfig: [*common, *common]\n"
    write(tmp_path, {"t.yaml": task})
    assert read_task_files(tmp_path, [Stage("t", "t.yaml", "t")]) == [task]
    pipeline = parse_pipeline(
        "envs: &e {A: x}\nstages:\n  - &s {name: a, task: a.yaml}\n  - {name: b, task: b.yaml}\n"
    )
    assert [s.name for s in pipeline.stages] == ["a", "b"] and pipeline.envs == {"A": "x"}


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"t.yaml": "run: echo\nloop: &x [1, *x]\n"})
    with pytest.raises(PipelineError) as info:
        read_task_files(tmp_path, [Stage("t", "t.yaml", "t")])
    assert (info.value.line, info.value.problem) == (2, p.E_YAML_RECURSIVE.format(name="x"))


def test_deep_nesting_in_a_task_file_names_file_line_and_limit(tmp_path: Path) -> None:
    depth = MAX_YAML_DEPTH + 1
    write(
        tmp_path, {"t.yaml": "run: echo\nx:\n" + "".join(f"{'  ' * i}- \n" for i in range(depth))}
    )
    with pytest.raises(PipelineError) as info:
        read_task_files(tmp_path, [Stage("t", "t.yaml", "t")])
    assert info.value.file == "t.yaml" and info.value.line is not None
    assert info.value.problem == p.E_TOO_DEEP.format(limit=MAX_YAML_DEPTH)


def test_nesting_up_to_the_limit_is_fine() -> None:
    inner = "[" * (MAX_YAML_DEPTH - 2) + "]" * (MAX_YAML_DEPTH - 2)
    assert parse_pipeline(f"envs: {{A: x}}\nmetrics: []\n# {inner}\n").envs == {"A": "x"}
    error = error_of(f"envs:\n  A: {'[' * MAX_YAML_DEPTH}{']' * MAX_YAML_DEPTH}\n")
    assert (error.line, error.problem) == (2, p.E_TOO_DEEP.format(limit=MAX_YAML_DEPTH))


def test_syntax_errors_in_task_files_name_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, {"t.yaml": "run: echo\nenvs: [a\n"})
    with pytest.raises(PipelineError) as info:
        read_task_files(tmp_path, [Stage("t", "t.yaml", "t")])
    assert info.value.file == "t.yaml" and info.value.line == 3
    assert info.value.problem.startswith("invalid YAML: ")


def test_non_utf8_task_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_bytes(b"run: |\n  echo \xe9t\xe9\n")
    with pytest.raises(PipelineError) as info:
        read_task_files(tmp_path, [Stage("t", "t.yaml", "t")])
    assert (info.value.file, info.value.line) == ("t.yaml", 2)
    assert info.value.problem == p.E_NOT_UTF8.format(byte=0xE9)


def test_too_many_stages_is_refused_at_the_first_one_too_many() -> None:
    stages = "".join(f"  - {{name: s{i}, task: s{i}.yaml}}\n" for i in range(MAX_STAGES + 1))
    error = error_of("stages:\n" + stages)
    assert error.line == MAX_STAGES + 2
    assert error.problem == p.E_TOO_MANY_STAGES.format(count=MAX_STAGES + 1, limit=MAX_STAGES)
    assert len(parse_pipeline("stages:\n" + stages.rsplit("  -", 1)[0]).stages) == MAX_STAGES


def test_long_stage_and_cluster_names_are_refused() -> None:
    long = "n" * (MAX_STAGE_NAME_CHARS + 1)
    error = error_of(f"stages:\n  - name: {long}\n    task: a.yaml\n")
    assert (error.line, error.problem) == (
        2,
        p.E_NAME_TOO_LONG.format(path="stages[0].name", size=len(long), limit=MAX_STAGE_NAME_CHARS),
    )
    error = error_of(f"stages:\n  - {{name: a, task: a.yaml, cluster: {long}}}\n")
    assert error.problem.startswith("stages[0].cluster is 65 characters long")


def test_long_metric_names_are_refused() -> None:
    name = "m" * (MAX_METRIC_NAME_CHARS + 1)
    error = error_of(f"metrics:\n  - name: {name}\n    pattern: 'x ([0-9]+)'\n")
    assert (error.line, error.problem) == (
        2,
        p.E_NAME_TOO_LONG.format(
            path="metrics[0].name", size=len(name), limit=MAX_METRIC_NAME_CHARS
        ),
    )


def test_pipeline_envs_are_bounded_in_count_and_size() -> None:
    many = "".join(f"  E{i}: x\n" for i in range(MAX_ENVS + 1))
    error = error_of("envs:\n" + many)
    assert (error.line, error.problem) == (
        MAX_ENVS + 2,
        p.E_TOO_MANY_ENVS.format(count=MAX_ENVS + 1, limit=MAX_ENVS),
    )
    error = error_of(f"envs:\n  BIG: {'v' * (MAX_ENV_VALUE_CHARS + 1)}\n")
    assert error.line == 2
    assert error.problem == (
        f"envs.BIG: the value is {MAX_ENV_VALUE_CHARS + 1:,} characters long; "
        f"the limit is {MAX_ENV_VALUE_CHARS:,}"
    )


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Paths this process opens while the test runs (a Python audit hook sees every open)."""
    import sys

    paths: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if active[0] and event == "open" and isinstance(args[0], str | Path):
            paths.append(str(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: switch it off instead
    yield paths
    active[0] = False


def test_a_50_mb_task_file_is_refused_by_its_size_without_being_read(
    tmp_path: Path, opened: list[str]
) -> None:
    write(tmp_path, {PIPELINE_FILE: "stages:\n  - {name: train, task: big.yaml}\n"})
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    opened.clear()
    with pytest.raises(PipelineError) as info:
        load_pipeline(tmp_path)
    assert (info.value.file, info.value.line) == (PIPELINE_FILE, 2)
    assert info.value.problem == p.E_TASK_TOO_LARGE.format(
        name="'train'", task="big.yaml", size=50 * 1024 * 1024, limit=MAX_TASK_FILE_BYTES
    )
    with pytest.raises(PipelineError):
        read_task_files(tmp_path, [Stage("train", "big.yaml", "train")])
    assert str(big) not in opened and str(big.resolve()) not in opened
    assert str((tmp_path / PIPELINE_FILE).resolve()) in opened  # the hook does see opens


def test_task_files_of_one_run_are_bounded_together(tmp_path: Path) -> None:
    size = MAX_TASK_FILE_BYTES - 10
    count = MAX_PIPELINE_TASKS_BYTES // size + 1
    write(tmp_path, {"t.yaml": "run: echo\n# " + "x" * (size - 13) + "\n"})
    assert (tmp_path / "t.yaml").stat().st_size == size
    stages = [Stage(f"s{i}", "t.yaml", f"s{i}") for i in range(count)]
    with pytest.raises(PipelineError) as info:
        read_task_files(tmp_path, stages)
    assert (info.value.file, info.value.line) == (PIPELINE_FILE, None)
    assert info.value.problem == p.E_TASKS_TOO_LARGE.format(
        count=count, size=count * size, limit=MAX_PIPELINE_TASKS_BYTES
    )
    assert len(read_task_files(tmp_path, stages[:-1])) == count - 1


# --- gates ----------------------------------------------------------------------------------

GATES_FILE = """\
stages:
  - {name: train, task: train.yaml}
gates:
  - accuracy >= 0.85
  - accuracy >= base - 0.01
  - loss <= base
  - "eval/f1 > base + 2"
"""


def test_gates_parse_in_order_with_their_thresholds() -> None:
    gates = parse_pipeline(GATES_FILE).gates
    assert [g.expr for g in gates] == [
        "accuracy >= 0.85",
        "accuracy >= base - 0.01",
        "loss <= base",
        "eval/f1 > base + 2",
    ]
    assert [(g.metric, g.op, g.number, g.offset) for g in gates] == [
        ("accuracy", ">=", 0.85, 0.0),
        ("accuracy", ">=", None, -0.01),
        ("loss", "<=", None, 0.0),
        ("eval/f1", ">", None, 2.0),
    ]


def test_a_pipeline_without_gates_has_none() -> None:
    assert parse_pipeline("stages:\n  - {name: a, task: a.yaml}\n").gates == []


@pytest.mark.parametrize(
    ("gate", "problem"),
    [
        ("accuracy => 0.85", "gates[1]: cannot read gate 'accuracy => 0.85'"),
        ("accuracy == 0.85", "gates[1]: cannot read gate 'accuracy == 0.85'"),
        ("accuracy >= high", "gates[1]: cannot read gate 'accuracy >= high'"),
        ("accuracy >= base * 2", "gates[1]: cannot read gate 'accuracy >= base * 2'"),
        ("'>= 0.85'", "gates[1]: cannot read gate '>= 0.85'"),
        ("accuracy >= 0.85 0.9", "gates[1]: cannot read gate 'accuracy >= 0.85 0.9'"),
        ("accuracy >= 1e999", "gates[1]: 1e999 in gate 'accuracy >= 1e999' is not a finite"),
        ("accuracy >= base + 1e999", "gates[1]: 1e999 in gate"),
        ("'accuracy >= '", "gates[1]: cannot read gate 'accuracy >='"),
        ("[accuracy, 0.85]", "gates[1] must be a string, not a list"),
        ("{accuracy: 0.85}", "gates[1] must be a string, not a mapping"),
        ("", "gates[1] must not be empty"),
        ("0.85", "gates[1]: cannot read gate '0.85'"),
    ],
)
def test_a_bad_gate_is_an_error_at_its_own_line(gate: str, problem: str) -> None:
    text = f"stages:\n  - {{name: a, task: a.yaml}}\ngates:\n  - accuracy >= 0.5\n  - {gate}\n"
    error = error_of(text, file="ci/.skyrun.yaml")
    assert error.file == "ci/.skyrun.yaml"
    assert error.line == 5, error
    assert problem in error.problem
    assert str(error).startswith("ci/.skyrun.yaml:5: ")


def test_the_syntax_error_shows_the_forms_that_work() -> None:
    error = error_of("gates:\n  - accuracy ≥ 0.85\n")
    assert error.line == 2
    assert "NAME OP NUMBER or NAME OP base [+ N | - N]" in error.problem
    assert "'accuracy >= 0.85'" in error.problem


def test_gates_must_be_a_list() -> None:
    error = error_of("gates: accuracy >= 0.85\n")
    assert (error.line, error.problem) == (1, "gates must be a list, not a string")


def test_too_many_gates_are_refused_at_the_first_one_over() -> None:
    from worker.gates import MAX_GATES

    lines = "".join(f"  - m{i} >= 1\n" for i in range(MAX_GATES + 1))
    error = error_of("gates:\n" + lines)
    assert error.line == MAX_GATES + 2
    assert f"the limit is {MAX_GATES}" in error.problem


def test_a_long_gate_is_refused_without_echoing_all_of_it() -> None:
    error = error_of("gates:\n  - " + "m" * 10_000 + " >= 1\n")
    assert error.line == 2 and "characters long; the limit is" in error.problem
    assert len(str(error)) < 300


# --- stages as a DAG (needs) ----------------------------------------------------------------

DIAMOND = """\
stages:
  - {name: prep, task: p.yaml}
  - {name: left, task: l.yaml, needs: [prep]}
  - {name: right, task: r.yaml, needs: [prep]}
  - {name: join, task: j.yaml, needs: [left, right]}
"""


def test_needs_default_to_the_stage_before_so_todays_files_keep_their_meaning() -> None:
    pipeline = parse_pipeline(DESIGN_EXAMPLE)
    assert [stage.needs for stage in pipeline.stages] == [None, None, None]
    assert p.resolve_needs(pipeline.stages) == {
        "preprocess": [],
        "train": ["preprocess"],
        "eval": ["train"],
    }
    assert p.resolve_needs(default_pipeline().stages) == p.resolve_needs(pipeline.stages)


def test_needs_parse_as_written_and_an_empty_list_starts_with_the_run() -> None:
    pipeline = parse_pipeline(
        "stages:\n  - {name: a, task: a.yaml}\n  - {name: b, task: b.yaml, needs: []}\n"
        "  - {name: c, task: c.yaml, needs: a}\n  - {name: d, task: d.yaml, needs: [b, c, b]}\n"
    )
    assert p.resolve_needs(pipeline.stages) == {"a": [], "b": [], "c": ["a"], "d": ["b", "c"]}


def test_a_diamond_plans_one_launch_per_cluster_and_downs_each_after_its_last_stage() -> None:
    stages = parse_pipeline(DIAMOND).stages
    assert [p.launches(stages, i) for i in range(4)] == [True, True, True, True]
    assert clusters_after(stages, 0) == {"left", "right", "join"}
    assert clusters_after(stages, 1) == {"join"}
    assert clusters_after(stages, 3) == set()


def test_stages_sharing_a_cluster_in_a_dag_launch_once_in_dag_order() -> None:
    # `fit` is listed first but needs `prep`: prep launches the shared cluster, fit execs.
    stages = parse_pipeline(
        "stages:\n  - {name: fit, task: f.yaml, cluster: gpu, needs: [prep]}\n"
        "  - {name: prep, task: p.yaml, cluster: gpu, needs: []}\n"
        "  - {name: side, task: s.yaml, needs: []}\n"
    ).stages
    assert [p.launches(stages, i) for i in range(3)] == [False, True, True]
    assert clusters_after(stages, 1) == {"gpu"}  # fit still needs gpu after prep
    assert "gpu" not in clusters_after(stages, 0)  # gpu can go down when fit ends


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "stages:\n  - {name: a, task: a.yaml}\n  - name: b\n    task: b.yaml\n"
            "    needs:\n      - a\n      - trian\n",
            7,
            "stages[1].needs[1]: unknown stage 'trian' (known: a, b): name a stage of this file",
        ),
        (
            "stages:\n  - name: a\n    task: a.yaml\n    needs: [a]\n",
            4,
            "stages[0].needs[0]: stage 'a' needs itself: remove it from its own needs",
        ),
        (
            "stages:\n  - {name: a, task: a.yaml, needs: [c]}\n"
            "  - {name: b, task: b.yaml, needs: [a]}\n"
            "  - {name: c, task: c.yaml, needs: [b]}\n",
            3,
            "stages[1].needs[0]: the needs form a cycle (a → b → c → a), so none of these stages "
            "could ever start: remove one of these needs",
        ),
        (
            # The cycle closes through a default need (b needs a): the error points at the
            # need that was written.
            "stages:\n  - {name: a, task: a.yaml, needs: [b]}\n  - {name: b, task: b.yaml}\n",
            2,
            "stages[0].needs[0]: the needs form a cycle (a → b → a), so none of these stages "
            "could ever start: remove one of these needs",
        ),
        (
            "stages:\n  - {name: prep, task: p.yaml}\n"
            "  - {name: left, task: l.yaml, cluster: gpu, needs: [prep]}\n"
            "  - name: right\n    task: r.yaml\n    needs: [prep]\n    cluster: gpu\n",
            7,
            "stages[2]: stages 'left' and 'right' share cluster 'gpu' but could run at the same "
            "time (neither needs the other): add 'left' to the needs of 'right', or give one of "
            "them its own cluster",
        ),
        (
            "stages:\n  - {name: a, task: a.yaml, needs: []}\n  - {name: a2, task: b.yaml}\n"
            "  - name: b\n    task: c.yaml\n    cluster: a\n    needs: []\n",
            6,
            "stages[2]: stages 'a' and 'b' share cluster 'a' but could run at the same time "
            "(neither needs the other): add 'a' to the needs of 'b', or give one of them its "
            "own cluster",
        ),
        (
            "stages:\n  - {name: a, task: a.yaml, needs: {x: 1}}\n",
            2,
            "stages[0].needs must be a list, not a mapping",
        ),
        (
            "stages:\n  - {name: prep, task: p.yaml, cluster: gpu}\n"
            "  - name: train\n    task: t.yaml\n    cluster: gpu\n    managed: true\n",
            6,
            "stages[1].managed: stage 'train' is a managed job, which SkyPilot's jobs controller "
            "runs on a cluster of its own, so it cannot share cluster 'gpu' with stage 'prep': "
            "give it a cluster of its own, or drop managed",
        ),
        (
            # Shared through the default cluster name (the stage's own): the earlier stage.
            "stages:\n  - {name: train, task: t.yaml, managed: true}\n"
            "  - {name: eval, task: e.yaml, cluster: train}\n",
            2,
            "stages[0].managed: stage 'train' is a managed job, which SkyPilot's jobs controller "
            "runs on a cluster of its own, so it cannot share cluster 'train' with stage 'eval': "
            "give it a cluster of its own, or drop managed",
        ),
    ],
    ids=[
        "unknown",
        "self",
        "cycle",
        "cycle-through-default",
        "cluster",
        "default-cluster-name",
        "kind",
        "managed-shared",
        "managed-shared-by-default-name",
    ],
)
def test_bad_needs_are_errors_at_the_line_of_the_entry(text: str, line: int, problem: str) -> None:
    error = error_of(text)
    assert (error.file, error.line, error.problem) == (PIPELINE_FILE, line, problem)


def test_stages_on_one_cluster_ordered_through_another_stage_are_fine() -> None:
    # a → mid → b: a and b share a cluster, and b needs a transitively.
    stages = parse_pipeline(
        "stages:\n  - {name: a, task: a.yaml, cluster: c}\n  - {name: mid, task: m.yaml}\n"
        "  - {name: b, task: b.yaml, cluster: c, needs: [mid]}\n"
    ).stages
    assert [p.launches(stages, i) for i in range(3)] == [True, True, False]


def test_a_selection_follows_needs_through_stages_left_out() -> None:
    pipeline = parse_pipeline(DIAMOND)
    selected = select_stages(pipeline, ["join", "prep"])
    assert [(s.name, s.needs) for s in selected] == [("prep", []), ("join", ["prep"])]
    # A selected stage whose needs are all left out starts with the run.
    selected = select_stages(pipeline, ["left", "right"])
    assert [(s.name, s.needs) for s in selected] == [("left", []), ("right", [])]
    # `/skyrun train eval` on the seed: train starts with the run, eval needs it and execs.
    seed = select_stages(default_pipeline(), ["train", "eval"])
    assert [(s.name, s.needs) for s in seed] == [("train", []), ("eval", ["train"])]
    assert [p.launches(seed, i) for i in range(2)] == [True, False]


def test_a_selection_keeps_stages_of_one_cluster_in_order() -> None:
    # a and c share a cluster through b; leaving b out must not let a and c run at once.
    pipeline = parse_pipeline(
        "stages:\n  - {name: a, task: a.yaml, cluster: s}\n  - {name: b, task: b.yaml}\n"
        "  - {name: c, task: c.yaml, cluster: s}\n"
    )
    selected = select_stages(pipeline, ["a", "c"])
    assert [s.needs for s in selected] == [[], ["a"]]
    assert [p.launches(selected, i) for i in range(2)] == [True, False]


# --- concurrency (concurrency caps) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"), [("", 0), ("0", 0), ("1", 1), ("0x10", 16), ("10_000", 10000)]
)
def test_concurrency_is_0_for_no_limit_or_a_positive_whole_number(text: str, value: int) -> None:
    pipeline = parse_pipeline(f"concurrency: {text}\n" if text else "timeout_minutes: 5\n")
    assert pipeline.concurrency == value


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("-1", "'-1'"),
        ("1.5", "'1.5'"),
        ("'2'", "'2'"),
        ("true", "'true'"),
        ("10001", "'10001'"),
        ("", "''"),
        ("[1]", "a list"),
        ("{n: 1}", "a mapping"),
    ],
)
def test_a_bad_concurrency_is_an_error_at_its_line(text: str, shown: str) -> None:
    error = error_of(f"stages: [{{name: a, task: a.yaml}}]\n\nconcurrency: {text}\n")
    assert error.line == 3
    assert error.problem == (
        "concurrency must be a whole number: how many runs of this repository may compute at "
        f"once, or 0 for no limit, at most 10,000 (got {shown})"
    )


# --- budget (issue 14) ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "usd"), [("5", 5.0), ("2.5", 2.5), ("0", 0.0)])
def test_budget_max_run_usd_is_read_in_dollars(text: str, usd: float) -> None:
    assert parse_pipeline(f"budget: {{max_run_usd: {text}}}\n").max_run_usd == usd
    assert parse_pipeline("stages: [{name: a, task: a.yaml}]\n").max_run_usd == 0


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "on: {}\nbudget:\n  max_run_usd: -1\n",
            3,
            "budget.max_run_usd must be a number of US dollars, 0 or more (got '-1')",
        ),
        (
            "budget: {max_run_usd: lots}\n",
            1,
            "budget.max_run_usd must be a number of US dollars, 0 or more (got 'lots')",
        ),
        (
            "budget: {max_run_usd: .inf}\n",
            1,
            "budget.max_run_usd must be a number of US dollars, 0 or more (got '.inf')",
        ),
        (
            "budget: {max_run_usd: [1]}\n",
            1,
            "budget.max_run_usd must be a number of US dollars, 0 or more (got list)",
        ),
        ("budget: {max_usd: 1}\n", 1, "budget: unknown key 'max_usd' (known: max_run_usd)"),
        ("budget: 10\n", 1, "budget must be a mapping, not a number"),
    ],
)
def test_a_bad_budget_is_an_error_at_its_line(text: str, line: int, problem: str) -> None:
    error = error_of(text)
    assert (error.line, error.problem) == (line, problem)
