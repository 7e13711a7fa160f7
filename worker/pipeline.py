"""The `.skyrun.yaml` pipeline file: parse, validate (with file and line), defaults, env merging."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from worker.gates import E_TOO_MANY_GATES, MAX_GATES, Gate, GateSyntaxError, parse_gate
from worker.limits import (
    MAX_ENV_VALUE_CHARS,
    MAX_ENVS,
    MAX_METRIC_NAME_CHARS,
    MAX_PIPELINE_FILE_BYTES,
    MAX_PIPELINE_TASKS_BYTES,
    MAX_STAGE_NAME_CHARS,
    MAX_STAGES,
    MAX_TASK_FILE_BYTES,
    MAX_YAML_ALIAS_NODES,
    MAX_YAML_DEPTH,
    too_long,
)
from worker.models import DEFAULT_MAX_INFRA_RETRIES

PIPELINE_FILE = ".skyrun.yaml"
BUCKET_ENV = "DATA_BUCKET_URL"

TOP_KEYS = (
    "on",
    "stages",
    "envs",
    "metrics",
    "gates",
    "notify",
    "autostop_minutes",
    "timeout_minutes",
    "max_infra_retries",
    "concurrency",
    "budget",  # cost (issue 14)
    "keep_warm_minutes",  # warm clusters (issue 12)
)
ON_KEYS = ("push", "pull_request", "merge_group")
STAGE_KEYS = ("name", "task", "cluster", "needs", "managed", "prelaunch")
METRIC_KEYS = ("name", "pattern")
NOTIFY_KEYS = ("slack",)
BUDGET_KEYS = ("max_run_usd",)  # cost (issue 14)
E_NOT_USD = "{path} must be a number of US dollars, 0 or more (got {value})"

# User-facing texts. `{path}` is where in the file (e.g. "stages[1].task"), `{where}` the same as a
# "stages[1]: " prefix (empty at the top level); quoted values come pre-quoted.
E_TOO_LARGE = "{too_long}: a pipeline file holds settings, not data; make it smaller"
E_NOT_UTF8 = "the file is not UTF-8 text (byte 0x{byte:02x} is not valid UTF-8): save it as UTF-8"
E_INVALID_YAML = "invalid YAML: {problem}"
E_TOO_DEEP = "invalid YAML: nested more than {limit} levels deep, the limit: flatten the structure"
E_YAML_RECURSIVE = "invalid YAML: alias *{name} refers to a value that contains it"
E_YAML_ALIASES = (
    "invalid YAML: aliases (*name) would expand the file by more than {limit:,} values, the "
    "limit (this is how a YAML bomb works): write the values out instead of reusing anchors"
)
E_TOO_MANY_STAGES = (
    "stages lists {count:,} stages; the limit is {limit}: merge small stages into one task"
)
E_NAME_TOO_LONG = "{path} is {size:,} characters long; the limit is {limit}"
E_TOO_MANY_ENVS = "envs: {count:,} variables; the limit is {limit}"
E_ENV_TOO_LONG = "envs.{name}: " + "{too_long}"
E_TASK_TOO_LARGE = (
    "stage {name}: task file {task} is {size:,} bytes long; the limit is {limit:,}: a task "
    "file holds settings and commands, not data; put data in a bucket or mount it from the "
    "repository with file_mounts"
)
E_TASKS_TOO_LARGE = (
    "the task files of the {count} stages to run are {size:,} bytes long together; the limit "
    "is {limit:,}: make them smaller, or run fewer stages at once (name the stages to run)"
)
E_EMPTY_FILE = (
    "the file is empty: list your stages under 'stages:', or delete the file to use the "
    "default stages"
)
E_TOP_NOT_MAPPING = "the top level must be a mapping with keys such as 'on:' and 'stages:'"
E_UNKNOWN_KEY = "{where}unknown key {key} (known: {known})"
E_DUPLICATE_KEY = "{where}duplicate key {key}"
E_KEY_NOT_NAME = "{where}keys must be plain names"
E_REQUIRED = "{path}: '{key}' is required"
E_EMPTY_VALUE = "{path} must not be empty"
E_NOT_STRING = "{path} must be a string, not a {kind}"
E_NOT_MAPPING = "{path} must be a mapping, not a {kind}"
E_NOT_LIST = "{path} must be a list, not a {kind}"
E_NOT_BOOL = "{path} must be true or false"
E_NOT_POSITIVE_INT = "{path} must be a positive integer"
E_NOT_RETRY_COUNT = "{path} must be a whole number from 0 to {most}"
MAX_INFRA_RETRIES = 10
"""Most relaunches a pipeline may allow a stage (each one provisions a cluster again)."""
MAX_KEEP_WARM_MINUTES = 24 * 60
E_MINUTES_OR_ZERO = "{path} must be a whole number of minutes from 0 to {most} (got {value})"
E_CONCURRENCY = (
    "concurrency must be a whole number: how many runs of this repository may compute at once, "
    "or 0 for no limit, at most {limit:,} (got {value})"
)
MAX_CONCURRENCY = 10_000
E_PUSH = "on.push must be a branch glob or a list of them, not a {kind}"
E_STAGES_EMPTY = "stages must list at least one stage"
E_STAGE_NAME = (
    "stage names must start with a letter or digit and contain only letters, digits, "
    "'_', '.' and '-' (got {name})"
)
E_CLUSTER_NAME = (
    "cluster names must start with a letter or digit and contain only letters, digits, "
    "'_', '.' and '-' (got {name})"
)
E_DUPLICATE_STAGE = "duplicate stage name {name}"
E_TASK_SUFFIX = "{path} must name a .yaml or .yml file (got {task})"
E_TASK_ESCAPE = (
    "{path} must be a relative path inside the repository, without '..' or control "
    "characters (got {task})"
)
E_ENV_NAME = (
    "envs: {name} is not a valid environment variable name (letters, digits and '_', "
    "not starting with a digit)"
)
E_ENV_VALUE = "envs.{name} must be a string, number or boolean, not a {kind}"
E_METRIC_NAME = "{path} must contain only letters, digits, '_', '.', ':', '/' and '-' (got {name})"
E_REGEX = "{path}: invalid regex: {error}"
E_REGEX_GROUPS = "{path} must have exactly one capture group (it has {count})"
E_SLACK_CHANNEL = (
    "notify.slack must be a channel like '#ml-runs' or a channel ID like 'C0123456789' "
    "(got {channel})"
)
E_SLACK_EMPTY = (
    'notify.slack is empty: quote the channel, as in slack: "#ml-runs" '
    "(an unquoted # starts a YAML comment)"
)
E_FILE_OUTSIDE = "the file is a symbolic link that points outside the repository (or in a loop)"
E_NOT_A_FILE = "the path is not a regular file"
E_TASK_MISSING = "stage {name}: task file {task} not found in the repository"
E_TASK_OUTSIDE = "stage {name}: task file {task} points outside the repository (or in a loop)"
E_TASK_NOT_FILE = "stage {name}: task file {task} is not a regular file"
DEFAULTS_HINT = (
    " (there is no .skyrun.yaml, so the default stages preprocess, train and eval are used; "
    "add a .skyrun.yaml that lists your stages)"
)
NO_STAGES_HINT = (
    " (.skyrun.yaml has no 'stages', so the default stages preprocess, train and eval are used; "
    "list your stages under 'stages:')"
)
# Stages as a DAG (`needs:`): `{path}` is where the entry is, e.g. "stages[2].needs[0]".
E_NEEDS_UNKNOWN = "{path}: unknown stage {name} (known: {known}): name a stage of this file"
E_NEEDS_SELF = "{path}: stage {name} needs itself: remove it from its own needs"
E_NEEDS_CYCLE = (
    "{path}: the needs form a cycle ({cycle}), so none of these stages could ever start: "
    "remove one of these needs"
)
E_CLUSTER_CONFLICT = (
    "{path}: stages {first} and {second} share cluster {cluster} but could run at the same "
    "time (neither needs the other): add {first} to the needs of {second}, or give one of "
    "them its own cluster"
)
E_MANAGED_SHARED = (
    "{path}: stage {stage} is a managed job, which SkyPilot's jobs controller runs on a cluster "
    "of its own, so it cannot share cluster {cluster} with stage {other}: give it a cluster of "
    "its own, or drop managed"
)
E_UNKNOWN_STAGE = "unknown stage {names} (known: {known})"
E_UNKNOWN_STAGES = "unknown stages {names} (known: {known})"
E_ASSIGNMENT = "expected KEY=VALUE, got {item}"
E_ASSIGNMENT_NAME = (
    "{name} is not a valid environment variable name (letters, digits and '_', "
    "not starting with a digit)"
)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
METRIC_NAME_RE = re.compile(r"[A-Za-z0-9_.:/-]+")
SLACK_CHANNEL_RE = re.compile(r"#[\w.-]{1,80}|[CGD][A-Z0-9]{6,}")

_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"


@dataclass
class Stage:
    name: str
    task: str
    """Path of a SkyPilot task YAML, relative to the repository root."""
    cluster: str
    """Defaults to the stage name; stages naming the same cluster share it."""
    needs: list[str] | None = None
    """Stages that must succeed before this one starts; None (no `needs:`) means the stage
    before it, [] starts with the run. See `resolve_needs`."""
    managed: bool = False
    """A SkyPilot managed job (recovers from spot preemption itself); the local backend runs it
    as an ordinary stage and says so in its log."""
    prelaunch: bool = True
    """False: never provision this stage's cluster before its needs have finished."""


@dataclass
class MetricPattern:
    name: str
    pattern: str
    """A regex with exactly one capture group giving the number."""


@dataclass
class Pipeline:
    stages: list[Stage]
    on_push: list[str] | None = None
    """Branch globs whose pushes start a run; None means the repository's default branch."""
    on_pull_request: bool = False
    on_merge_group: bool = False
    """True: GitHub merge queue groups (`merge_group` deliveries) start runs on the group's head."""
    envs: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricPattern] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    """Quality gates (worker/gates.py), decided against the run's metrics after its stages."""
    notify_slack: str = ""
    autostop_minutes: int = 30
    timeout_minutes: int = 180
    max_infra_retries: int = DEFAULT_MAX_INFRA_RETRIES
    """Relaunches of a stage the infrastructure failed (preemption, no capacity, lost
    connection); a job that exits non-zero is never retried."""
    concurrency: int = 0
    """At most this many runs of the repository compute at once (0: no limit); more queue."""
    max_run_usd: float = 0.0
    keep_warm_minutes: int = 0
    """> 0: after a run its clusters stay up this long, leased to the lane's next run."""
    """`budget.max_run_usd`: > 0, a run estimated above it waits for approval (issue 14)."""
    from_file: bool = False
    """False when the file was absent and the defaults were used."""


class PipelineError(Exception):
    """A user error in the pipeline file (or a task file it names): names file, line and problem."""

    def __init__(self, problem: str, file: str = PIPELINE_FILE, line: int | None = None) -> None:
        super().__init__(problem, file, line)
        self.problem = problem
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.problem}"
        return f"{self.file}:{self.line}: {self.problem}"


DEFAULT_STAGES: tuple[Stage, ...] = (
    Stage(name="preprocess", task="data_preprocessing.yaml", cluster="preprocess"),
    Stage(name="train", task="train.yaml", cluster="train"),
    Stage(name="eval", task="eval.yaml", cluster="train"),
)


def default_pipeline() -> Pipeline:
    return Pipeline(stages=[replace(stage) for stage in DEFAULT_STAGES])


def _q(value: str, limit: int = 60) -> str:
    """Quote a user value for an error text, cut so a huge value cannot flood a comment."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return {_BOOL: "boolean", _INT: "number", _FLOAT: "number", _NULL: "null"}.get(
        node.tag, "string"
    )


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


@dataclass
class DagLines:
    """Where a stage's DAG entries are in the file, for errors at the line at fault."""

    index: int
    stage: int
    cluster: int | None = None
    managed: int | None = None
    needs: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Needed stage name → (path such as "stages[2].needs[0]", line)."""


def resolve_needs(stages: list[Stage]) -> dict[str, list[str]]:
    """Each stage's needs, with None (no `needs:` written) read as the stage before it."""
    resolved: dict[str, list[str]] = {}
    for index, stage in enumerate(stages):
        if stage.needs is None:
            resolved[stage.name] = [stages[index - 1].name] if index else []
        else:
            resolved[stage.name] = list(stage.needs)
    return resolved


def ancestors(stages: list[Stage]) -> dict[str, set[str]]:
    """Every stage that must succeed before each stage (its needs, transitively).

    Needs that name no stage of `stages` are ignored; `check_dag` refuses them in a file.
    """
    needs = resolve_needs(stages)
    found: dict[str, set[str]] = {}

    def visit(name: str, seen: frozenset[str]) -> set[str]:
        if name not in found:
            result: set[str] = set()
            for need in needs.get(name, []):
                if need in needs and need not in seen:
                    result |= {need} | visit(need, seen | {need})
            found[name] = result
        return found[name]

    for stage in stages:
        visit(stage.name, frozenset({stage.name}))
    return found


def check_dag(stages: list[Stage], lines: Mapping[str, DagLines], file: str) -> None:
    """Refuse unknown needs, a stage needing itself, cycles, two stages that could run at the
    same time on one cluster, and a managed stage sharing its cluster; each error names the line
    of the offending entry."""
    known = [stage.name for stage in stages]
    needs = resolve_needs(stages)

    def at(stage: str, need: str) -> tuple[str, int | None]:
        where = lines.get(stage)
        if where is None or need not in where.needs:
            return "stages", None
        return where.needs[need]

    for stage in stages:
        for need in needs[stage.name]:
            path, line = at(stage.name, need)
            if need == stage.name:
                raise PipelineError(E_NEEDS_SELF.format(path=path, name=_q(need)), file, line)
            if need not in needs:
                problem = E_NEEDS_UNKNOWN.format(path=path, name=_q(need), known=", ".join(known))
                raise PipelineError(problem, file, line)
    # Depth-first search; a need back to a stage on the current path closes a cycle.
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path_stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path_stack.append(name)
        for need in needs[name]:
            if state.get(need) == 1:
                cycle = [*path_stack[path_stack.index(need) :], need]
                # Point at a need written in the file (a missing `needs:` is implicit).
                edges = list(pairwise(cycle))
                written = [e for e in edges if at(*e)[1] is not None] or edges
                entry, line = at(*written[-1])
                problem = E_NEEDS_CYCLE.format(path=entry, cycle=" → ".join(reversed(cycle)))
                raise PipelineError(problem, file, line)
            if need not in state:
                visit(need)
        path_stack.pop()
        state[name] = 2

    for stage in stages:
        if stage.name not in state:
            visit(stage.name)

    def entry(stage: str, key: str) -> tuple[str, int | None]:
        """Where to point for the stage's `cluster` (its entry) or `managed` (that key)."""
        where = lines.get(stage)
        if where is None:
            return "stages", None
        suffix = ".managed" if key == "managed" else ""
        line = where.managed if key == "managed" else where.cluster
        return f"stages[{where.index}]{suffix}", line or where.stage

    before = ancestors(stages)
    for index, second in enumerate(stages):
        for first in stages[:index]:
            if first.cluster != second.cluster:
                continue
            if first.name in before[second.name] or second.name in before[first.name]:
                continue
            path, line = entry(second.name, "cluster")
            problem = E_CLUSTER_CONFLICT.format(
                path=path, first=_q(first.name), second=_q(second.name), cluster=_q(first.cluster)
            )
            raise PipelineError(problem, file, line)
    for stage in stages:
        other = next((o for o in stages if o.cluster == stage.cluster and o is not stage), None)
        if stage.managed and other is not None:
            path, line = entry(stage.name, "managed")
            problem = E_MANAGED_SHARED.format(
                path=path, stage=_q(stage.name), cluster=_q(stage.cluster), other=_q(other.name)
            )
            raise PipelineError(problem, file, line)


class _Parser:
    """Walks the composed node tree, so every error carries the line of the node at fault."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.constructor = SafeConstructor()
        self.task_lines: dict[str, int] = {}
        self.dag_lines: dict[str, DagLines] = {}

    def fail(self, problem: str, node: Node) -> NoReturn:
        raise PipelineError(problem, self.file, _line(node))

    def mapping(
        self, node: Node, path: str, known: tuple[str, ...]
    ) -> dict[str, tuple[ScalarNode, Node]]:
        if not isinstance(node, MappingNode):
            self.fail(E_NOT_MAPPING.format(path=path, kind=_kind(node)), node)
        where = f"{path}: " if path else ""
        items: dict[str, tuple[ScalarNode, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                self.fail(E_KEY_NOT_NAME.format(where=where), key_node)
            # The key as written: YAML 1.1 resolves a bare `on` to the boolean true, which a
            # loader of Python objects would turn into the key True; GitHub Actions users write it.
            key = str(key_node.value)
            if key not in known:
                self.fail(
                    E_UNKNOWN_KEY.format(where=where, key=_q(key), known=", ".join(known)),
                    key_node,
                )
            if key in items:
                self.fail(E_DUPLICATE_KEY.format(where=where, key=_q(key)), key_node)
            items[key] = (key_node, value_node)
        return items

    def sequence(self, node: Node, path: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.fail(E_NOT_LIST.format(path=path, kind=_kind(node)), node)
        return list(node.value)

    def string(self, node: Node, path: str) -> str:
        """A scalar as written: `name: true` and `name: 1.10` give the strings "true" and "1.10"."""
        if not isinstance(node, ScalarNode):
            self.fail(E_NOT_STRING.format(path=path, kind=_kind(node)), node)
        if node.tag == _NULL or node.value == "":
            self.fail(E_EMPTY_VALUE.format(path=path), node)
        return str(node.value)

    def name(self, node: Node, path: str) -> str:
        name = self.string(node, path)
        if len(name) > MAX_STAGE_NAME_CHARS:
            self.fail(
                E_NAME_TOO_LONG.format(path=path, size=len(name), limit=MAX_STAGE_NAME_CHARS), node
            )
        return name

    def boolean(self, node: Node, path: str) -> bool:
        if not isinstance(node, ScalarNode) or node.tag != _BOOL:
            self.fail(E_NOT_BOOL.format(path=path), node)
        return self.constructor.construct_yaml_bool(node)

    def positive_int(self, node: Node, path: str) -> int:
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            self.fail(E_NOT_POSITIVE_INT.format(path=path), node)
        value = self.constructor.construct_yaml_int(node)
        if value <= 0:
            self.fail(E_NOT_POSITIVE_INT.format(path=path), node)
        return value

    def parse(self, root: Node) -> Pipeline:
        if not isinstance(root, MappingNode):
            self.fail(E_TOP_NOT_MAPPING, root)
        items = self.mapping(root, "", TOP_KEYS)
        pipeline = Pipeline(stages=[replace(stage) for stage in DEFAULT_STAGES], from_file=True)
        if "on" in items:
            self.on(items["on"][1], pipeline)
        if "stages" in items:
            pipeline.stages = self.stages(items["stages"][1])
        if "envs" in items:
            pipeline.envs = self.envs(items["envs"][1])
        if "metrics" in items:
            pipeline.metrics = self.metrics(items["metrics"][1])
        if "gates" in items:
            pipeline.gates = self.gates(items["gates"][1])
        if "notify" in items:
            pipeline.notify_slack = self.notify(items["notify"][1])
        if "autostop_minutes" in items:
            pipeline.autostop_minutes = self.positive_int(
                items["autostop_minutes"][1], "autostop_minutes"
            )
        if "timeout_minutes" in items:
            pipeline.timeout_minutes = self.positive_int(
                items["timeout_minutes"][1], "timeout_minutes"
            )
        if "max_infra_retries" in items:
            pipeline.max_infra_retries = self.retry_count(
                items["max_infra_retries"][1], "max_infra_retries"
            )
        if "concurrency" in items:
            pipeline.concurrency = self.concurrency(items["concurrency"][1])
        if "budget" in items:
            pipeline.max_run_usd = self.budget(items["budget"][1])
        if "keep_warm_minutes" in items:
            pipeline.keep_warm_minutes = self.minutes_or_zero(
                items["keep_warm_minutes"][1], "keep_warm_minutes", MAX_KEEP_WARM_MINUTES
            )
        return pipeline

    def minutes_or_zero(self, node: Node, path: str, most: int) -> int:
        """0 (off) up to `most` minutes, written as a plain YAML integer."""
        if isinstance(node, ScalarNode) and node.tag == _INT:
            value = self.constructor.construct_yaml_int(node)
            if 0 <= value <= most:
                return int(value)
        shown = _q(str(node.value)) if isinstance(node, ScalarNode) else f"a {_kind(node)}"
        self.fail(E_MINUTES_OR_ZERO.format(path=path, most=most, value=shown), node)

    def retry_count(self, node: Node, path: str) -> int:
        problem = E_NOT_RETRY_COUNT.format(path=path, most=MAX_INFRA_RETRIES)
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            self.fail(problem, node)
        value = self.constructor.construct_yaml_int(node)
        if not 0 <= value <= MAX_INFRA_RETRIES:
            self.fail(problem, node)
        return value

    def concurrency(self, node: Node) -> int:
        """0 (no limit) or a positive integer, written as a plain YAML integer."""
        if isinstance(node, ScalarNode) and node.tag == _INT:
            value = self.constructor.construct_yaml_int(node)
            if 0 <= value <= MAX_CONCURRENCY:
                return int(value)
        shown = _q(str(node.value)) if isinstance(node, ScalarNode) else f"a {_kind(node)}"
        self.fail(E_CONCURRENCY.format(limit=MAX_CONCURRENCY, value=shown), node)

    def budget(self, node: Node) -> float:
        """`budget: {max_run_usd: N}`: dollars, 0 (no limit) or more."""
        items = self.mapping(node, "budget", BUDGET_KEYS)
        if "max_run_usd" not in items:
            return 0.0
        value = items["max_run_usd"][1]
        path = "budget.max_run_usd"
        if not isinstance(value, ScalarNode) or value.tag not in (_INT, _FLOAT):
            shown = _q(str(value.value)) if isinstance(value, ScalarNode) else _kind(value)
            self.fail(E_NOT_USD.format(path=path, value=shown), value)
        number = float(
            self.constructor.construct_yaml_int(value)
            if value.tag == _INT
            else self.constructor.construct_yaml_float(value)
        )
        if not math.isfinite(number) or number < 0:
            self.fail(E_NOT_USD.format(path=path, value=_q(str(value.value))), value)
        return number

    def on(self, node: Node, pipeline: Pipeline) -> None:
        items = self.mapping(node, "on", ON_KEYS)
        if "push" in items:
            push = items["push"][1]
            if isinstance(push, ScalarNode) and push.tag != _NULL:
                pipeline.on_push = [self.string(push, "on.push")]
            elif isinstance(push, SequenceNode):
                pipeline.on_push = [
                    self.string(glob, f"on.push[{i}]") for i, glob in enumerate(push.value)
                ]
            else:
                self.fail(E_PUSH.format(kind=_kind(push)), push)
        if "pull_request" in items:
            pipeline.on_pull_request = self.boolean(items["pull_request"][1], "on.pull_request")
        if "merge_group" in items:
            pipeline.on_merge_group = self.boolean(items["merge_group"][1], "on.merge_group")

    def stages(self, node: Node) -> list[Stage]:
        nodes = self.sequence(node, "stages")
        if not nodes:
            self.fail(E_STAGES_EMPTY, node)
        if len(nodes) > MAX_STAGES:
            self.fail(
                E_TOO_MANY_STAGES.format(count=len(nodes), limit=MAX_STAGES), nodes[MAX_STAGES]
            )
        stages: list[Stage] = []
        for index, stage_node in enumerate(nodes):
            path = f"stages[{index}]"
            items = self.mapping(stage_node, path, STAGE_KEYS)
            for key in ("name", "task"):
                if key not in items:
                    self.fail(E_REQUIRED.format(path=path, key=key), stage_node)
            name_node = items["name"][1]
            name = self.name(name_node, f"{path}.name")
            if not NAME_RE.fullmatch(name):
                self.fail(E_STAGE_NAME.format(name=_q(name)), name_node)
            if any(stage.name == name for stage in stages):
                self.fail(E_DUPLICATE_STAGE.format(name=_q(name)), name_node)
            task_node = items["task"][1]
            task = self.task(task_node, f"{path}.task")
            cluster = name
            if "cluster" in items:
                cluster_node = items["cluster"][1]
                cluster = self.name(cluster_node, f"{path}.cluster")
                if not NAME_RE.fullmatch(cluster):
                    self.fail(E_CLUSTER_NAME.format(name=_q(cluster)), cluster_node)
            lines = DagLines(index=index, stage=_line(name_node))
            if "cluster" in items:
                lines.cluster = _line(items["cluster"][1])
            needs = None
            if "needs" in items:
                needs = self.needs(items["needs"][1], f"{path}.needs", lines)
            stage = Stage(name=name, task=task, cluster=cluster, needs=needs)
            if "managed" in items:
                stage.managed = self.boolean(items["managed"][1], f"{path}.managed")
                lines.managed = _line(items["managed"][1])
            if "prelaunch" in items:
                stage.prelaunch = self.boolean(items["prelaunch"][1], f"{path}.prelaunch")
            stages.append(stage)
            self.task_lines[name] = _line(task_node)
            self.dag_lines[name] = lines
        check_dag(stages, self.dag_lines, self.file)
        return stages

    def needs(self, node: Node, path: str, lines: DagLines) -> list[str]:
        """`needs: [a, b]` (or `needs: a`); repeats count once."""
        if isinstance(node, ScalarNode) and node.tag != _NULL:
            entries: list[tuple[Node, str]] = [(node, path)]
        else:
            entries = [(n, f"{path}[{i}]") for i, n in enumerate(self.sequence(node, path))]
        needs: list[str] = []
        for entry, entry_path in entries:
            name = self.name(entry, entry_path)
            if name not in needs:
                needs.append(name)
                lines.needs[name] = (entry_path, _line(entry))
        return needs

    def task(self, node: Node, path: str) -> str:
        task = self.string(node, path)
        parts = PurePosixPath(task).parts
        if (
            PurePosixPath(task).is_absolute()
            or ".." in parts
            or any(ord(char) < 32 for char in task)
        ):
            self.fail(E_TASK_ESCAPE.format(path=path, task=_q(task)), node)
        if not task.endswith((".yaml", ".yml")):
            self.fail(E_TASK_SUFFIX.format(path=path, task=_q(task)), node)
        return task

    def envs(self, node: Node) -> dict[str, str]:
        if not isinstance(node, MappingNode):
            self.fail(E_NOT_MAPPING.format(path="envs", kind=_kind(node)), node)
        if len(node.value) > MAX_ENVS:
            self.fail(
                E_TOO_MANY_ENVS.format(count=len(node.value), limit=MAX_ENVS),
                node.value[MAX_ENVS][0],
            )
        envs: dict[str, str] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                self.fail(E_KEY_NOT_NAME.format(where="envs: "), key_node)
            name = str(key_node.value)
            if not ENV_NAME_RE.fullmatch(name):
                self.fail(E_ENV_NAME.format(name=_q(name)), key_node)
            if name in envs:
                self.fail(E_DUPLICATE_KEY.format(where="envs: ", key=_q(name)), key_node)
            if not isinstance(value_node, ScalarNode):
                self.fail(E_ENV_VALUE.format(name=name, kind=_kind(value_node)), value_node)
            # Scalars as written (`1.10` stays "1.10", `true` stays "true"); null means empty.
            envs[name] = "" if value_node.tag == _NULL else str(value_node.value)
            if len(envs[name]) > MAX_ENV_VALUE_CHARS:
                problem = too_long("the value", len(envs[name]), MAX_ENV_VALUE_CHARS)
                self.fail(E_ENV_TOO_LONG.format(name=name, too_long=problem), value_node)
        return envs

    def metrics(self, node: Node) -> list[MetricPattern]:
        metrics: list[MetricPattern] = []
        for index, metric_node in enumerate(self.sequence(node, "metrics")):
            path = f"metrics[{index}]"
            items = self.mapping(metric_node, path, METRIC_KEYS)
            for key in METRIC_KEYS:
                if key not in items:
                    self.fail(E_REQUIRED.format(path=path, key=key), metric_node)
            name_node = items["name"][1]
            name = self.string(name_node, f"{path}.name")
            if not METRIC_NAME_RE.fullmatch(name):
                self.fail(E_METRIC_NAME.format(path=f"{path}.name", name=_q(name)), name_node)
            if len(name) > MAX_METRIC_NAME_CHARS:
                problem = E_NAME_TOO_LONG.format(
                    path=f"{path}.name", size=len(name), limit=MAX_METRIC_NAME_CHARS
                )
                self.fail(problem, name_node)
            pattern_node = items["pattern"][1]
            pattern = self.string(pattern_node, f"{path}.pattern")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                self.fail(E_REGEX.format(path=f"{path}.pattern", error=exc), pattern_node)
            if compiled.groups != 1:
                self.fail(
                    E_REGEX_GROUPS.format(path=f"{path}.pattern", count=compiled.groups),
                    pattern_node,
                )
            metrics.append(MetricPattern(name=name, pattern=pattern))
        return metrics

    def gates(self, node: Node) -> list[Gate]:
        """Each gate is checked here, so a bad one is an error at its own line."""
        nodes = self.sequence(node, "gates")
        if len(nodes) > MAX_GATES:
            self.fail(E_TOO_MANY_GATES.format(count=len(nodes), limit=MAX_GATES), nodes[MAX_GATES])
        gates: list[Gate] = []
        for index, gate_node in enumerate(nodes):
            path = f"gates[{index}]"
            try:
                gates.append(parse_gate(self.string(gate_node, path), path))
            except GateSyntaxError as err:
                self.fail(str(err), gate_node)
        return gates

    def notify(self, node: Node) -> str:
        items = self.mapping(node, "notify", NOTIFY_KEYS)
        if "slack" not in items:
            return ""
        slack_node = items["slack"][1]
        if isinstance(slack_node, ScalarNode) and slack_node.tag == _NULL:
            self.fail(E_SLACK_EMPTY, slack_node)
        channel = self.string(slack_node, "notify.slack")
        if not SLACK_CHANNEL_RE.fullmatch(channel):
            self.fail(E_SLACK_CHANNEL.format(channel=_q(channel)), slack_node)
        return channel


_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _scan(text: str, file: str, loader: type[yaml.SafeLoader]) -> None:
    """Walk the YAML events, refusing deep nesting and aliases that expand beyond the budget.

    Runs before anything builds the document: composing a bomb is cheap (aliases share nodes),
    but everything that walks or prints it afterwards (SkyPilot's validation, its errors) pays
    for every expanded value.
    """
    # Per open collection: its anchor and how many values it holds, aliases expanded.
    stack: list[tuple[str | None, list[int]]] = []
    expanded: dict[str, int] = {}
    added = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, CollectionEndEvent):
            anchor, (size,) = stack.pop()
        elif isinstance(event, CollectionStartEvent):
            if len(stack) >= MAX_YAML_DEPTH:
                raise PipelineError(E_TOO_DEEP.format(limit=MAX_YAML_DEPTH), file, _line_of(event))
            stack.append((event.anchor, [1]))
            continue
        elif isinstance(event, ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, AliasEvent):
            name = str(event.anchor)
            if any(open_anchor == name for open_anchor, _ in stack):
                raise PipelineError(E_YAML_RECURSIVE.format(name=name), file, _line_of(event))
            # An undefined alias is left for the composer, which reports it with its line.
            anchor, size = None, expanded.get(name, 0)
            added += size
            if added > MAX_YAML_ALIAS_NODES:
                raise PipelineError(
                    E_YAML_ALIASES.format(limit=MAX_YAML_ALIAS_NODES), file, _line_of(event)
                )
        else:
            continue
        if anchor is not None:
            expanded[anchor] = size
        if stack:
            stack[-1][1][0] += size


def _line_of(event: yaml.Event) -> int | None:
    mark = event.start_mark
    return None if mark is None else int(mark.line) + 1


def _yaml_error(exc: BaseException, text: str, file: str) -> PipelineError:
    """A parser's exception as a PipelineError naming the file, the line and the problem."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "unreadable"
        if exc.context and problem.startswith("but "):
            problem = f"{exc.context}, {problem}"
        line = None if mark is None else int(mark.line) + 1
        return PipelineError(E_INVALID_YAML.format(problem=problem), file, line)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        problem = f"unacceptable character #x{char:04x}: {exc.reason}"
        return PipelineError(E_INVALID_YAML.format(problem=problem), file, line)
    if isinstance(exc, RecursionError):
        return PipelineError(E_TOO_DEEP.format(limit=MAX_YAML_DEPTH), file)
    return PipelineError(E_INVALID_YAML.format(problem=exc), file)


def check_yaml(text: str, file: str) -> None:
    """Raise PipelineError (file, line, limit) for YAML too deep, too self-referential or invalid.

    Every pipeline and task file passes through here before any parser builds it.
    """
    try:
        try:
            _scan(text, file, _FAST_LOADER)
        except yaml.YAMLError:
            # Report syntax errors with the pure-Python parser's messages (what users see
            # elsewhere), and finish the checks with it in case the two parsers disagree.
            _scan(text, file, yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise _yaml_error(exc, text, file) from None


def _parse(text: str, file: str) -> tuple[Pipeline, dict[str, int]]:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_PIPELINE_FILE_BYTES:
        raise PipelineError(_too_large(size), file)
    check_yaml(text, file)
    try:
        try:
            root = yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:  # say what is wrong as the pure-Python parser words it
            root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise _yaml_error(exc, text, file) from None
    if root is None:
        raise PipelineError(E_EMPTY_FILE, file)
    parser = _Parser(file)
    return parser.parse(root), parser.task_lines


def _too_large(size: int) -> str:
    return E_TOO_LARGE.format(
        too_long=too_long("the file", size, MAX_PIPELINE_FILE_BYTES, unit="bytes")
    )


def decode_utf8(data: bytes, file: str) -> str:
    """`data` as text, or a PipelineError naming the file and the line of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PipelineError(E_NOT_UTF8.format(byte=data[err.start]), file, line) from None


def parse_pipeline(text: str, file: str = PIPELINE_FILE) -> Pipeline:
    """Parse and validate a pipeline file's text; a file without `stages` gets the default ones."""
    return _parse(text, file)[0]


def _resolve(path: Path, root: Path) -> Path | None:
    """The real path if it stays inside `root` (symlinks followed), else None."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return resolved if resolved.is_relative_to(root) else None


def load_pipeline(checkout: Path) -> Pipeline:
    """Read the checkout's pipeline file (or use the defaults) and check every task file exists."""
    root = checkout.resolve()
    path = root / PIPELINE_FILE
    task_lines: dict[str, int] = {}
    if not path.is_symlink() and not path.exists():
        pipeline, hint = default_pipeline(), DEFAULTS_HINT
    else:
        resolved = _resolve(path, root)
        if resolved is None:
            raise PipelineError(E_FILE_OUTSIDE)
        if not resolved.is_file():
            raise PipelineError(E_NOT_A_FILE)
        data = _read_capped(resolved, MAX_PIPELINE_FILE_BYTES)
        if data is None:
            raise PipelineError(_too_large(resolved.stat().st_size))
        text = decode_utf8(data, PIPELINE_FILE)
        pipeline, task_lines = _parse(text, PIPELINE_FILE)
        # Stages come with their lines from the file; none means the file fell back to defaults.
        hint = "" if task_lines else NO_STAGES_HINT
    for stage in pipeline.stages:
        line = task_lines.get(stage.name)
        task = _resolve(root / stage.task, root)
        if task is None:
            raise PipelineError(
                E_TASK_OUTSIDE.format(name=_q(stage.name), task=stage.task), line=line
            )
        if not task.exists():
            raise PipelineError(
                E_TASK_MISSING.format(name=_q(stage.name), task=stage.task) + hint, line=line
            )
        if not task.is_file():
            raise PipelineError(
                E_TASK_NOT_FILE.format(name=_q(stage.name), task=stage.task), line=line
            )
        size = task.stat().st_size
        if size > MAX_TASK_FILE_BYTES:
            raise PipelineError(_task_too_large(stage, size), line=line)
    return pipeline


def _task_too_large(stage: Stage, size: int) -> str:
    return E_TASK_TOO_LARGE.format(
        name=_q(stage.name), task=stage.task, size=size, limit=MAX_TASK_FILE_BYTES
    )


def _read_capped(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than `limit` (never reading past it)."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def read_task_files(checkout: Path, stages: list[Stage]) -> list[str]:
    """The text of each stage's task file, checked for size (before reading) and YAML shape.

    Every stage carries its own copy into the run's activities, so their sizes add up even
    when stages share a file. Task files were found by `load_pipeline`; errors name the file.
    """
    root = checkout.resolve()
    sizes = [(root / stage.task).stat().st_size for stage in stages]
    for stage, size in zip(stages, sizes, strict=True):
        if size > MAX_TASK_FILE_BYTES:
            raise PipelineError(_task_too_large(stage, size))
    if sum(sizes) > MAX_PIPELINE_TASKS_BYTES:
        raise PipelineError(
            E_TASKS_TOO_LARGE.format(
                count=len(stages), size=sum(sizes), limit=MAX_PIPELINE_TASKS_BYTES
            )
        )
    texts: dict[str, str] = {}
    for stage in stages:
        if stage.task not in texts:
            path = _resolve(root / stage.task, root)
            if path is None:
                raise PipelineError(E_TASK_OUTSIDE.format(name=_q(stage.name), task=stage.task))
            data = _read_capped(path, MAX_TASK_FILE_BYTES)
            if data is None:  # it grew since it was measured
                raise PipelineError(_task_too_large(stage, path.stat().st_size))
            text = decode_utf8(data, stage.task)
            check_yaml(text, stage.task)
            texts[stage.task] = text
    return [texts[stage.task] for stage in stages]


def select_stages(pipeline: Pipeline, names: list[str]) -> list[Stage]:
    """The named stages in pipeline order (all of them for no names); unknown names are an error.

    A selected stage's needs are followed through stages left out to the selected ones they
    lead to, so order (and which stages share a cluster one after another) is kept; a stage
    with no selected stage before it starts with the run.
    """
    if not names:
        return list(pipeline.stages)
    known = [stage.name for stage in pipeline.stages]
    unknown = list(dict.fromkeys(name for name in names if name not in known))
    if unknown:
        template = E_UNKNOWN_STAGE if len(unknown) == 1 else E_UNKNOWN_STAGES
        raise PipelineError(
            template.format(names=", ".join(_q(n) for n in unknown), known=", ".join(known))
        )
    wanted = set(names)
    needs = resolve_needs(pipeline.stages)

    def selected_before(name: str, seen: set[str]) -> set[str]:
        found: set[str] = set()
        for need in needs.get(name, []):
            if need in seen:
                continue
            seen.add(need)
            found |= {need} if need in wanted else selected_before(need, seen)
        return found

    selected = []
    for stage in pipeline.stages:
        if stage.name in wanted:
            before = selected_before(stage.name, set())
            restricted = [s.name for s in pipeline.stages if s.name in before]
            selected.append(replace(stage, needs=restricted))
    return selected


def clusters_after(stages: list[Stage], index: int) -> set[str]:
    """Clusters that stages which may run after position `index` still need (the stages that
    need it, transitively; all of them for -1); others launched can go down when it ends."""
    if index < 0:
        return {stage.cluster for stage in stages}
    before = ancestors(stages)
    name = stages[index].name
    return {stage.cluster for stage in stages if name in before[stage.name]}


def launches(stages: list[Stage], index: int) -> bool:
    """Whether stage `index` launches its cluster: no stage it needs (transitively) uses it.

    Stages sharing a cluster are ordered by their needs (`check_dag`), so exactly the first
    of them launches and the others exec on it.
    """
    stage = stages[index]
    before = ancestors(stages)[stage.name]
    return not any(other.cluster == stage.cluster for other in stages if other.name in before)


def merge_envs(
    task_envs: Mapping[str, str | None],
    pipeline_envs: Mapping[str, str],
    bucket_url: str,
    trigger_envs: Mapping[str, str],
) -> dict[str, str]:
    """Merge env layers: task YAML envs < pipeline `envs` < trigger KEY=VALUE.

    A non-empty `bucket_url` (SKYPILOT_BUCKET_URL) fills DATA_BUCKET_URL when the task and pipeline
    layers leave it missing or empty; trigger envs always win. Task envs whose value is None
    (required in SkyPilot) stay absent unless a later layer supplies them.
    """
    merged = {key: value for key, value in task_envs.items() if value is not None}
    merged.update(pipeline_envs)
    if bucket_url and not merged.get(BUCKET_ENV):
        merged[BUCKET_ENV] = bucket_url
    merged.update(trigger_envs)
    return merged


def branch_matches(globs: list[str] | None, branch: str, default_branch: str) -> bool:
    """Whether a push to `branch` (a short name) starts a run; `*` also matches across `/`."""
    if not branch:
        return False
    if globs is None:
        return branch == default_branch
    return any(fnmatchcase(branch, glob) for glob in globs)


def parse_env_assignments(args: list[str]) -> dict[str, str]:
    """Parse `KEY=VALUE` items (later ones win); errors never echo a value, which may be secret."""
    envs: dict[str, str] = {}
    for item in args:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(E_ASSIGNMENT.format(item=_q(item)))
        if not ENV_NAME_RE.fullmatch(name):
            raise ValueError(E_ASSIGNMENT_NAME.format(name=_q(name)))
        envs[name] = value
    return envs
