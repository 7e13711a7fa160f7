"""The parts of GitHub's webhook payloads skyrun reads, validated strictly (the rest is ignored).

Only the fields skyrun uses are modelled, each with its exact JSON type (strict: no coercion) and
the values GitHub itself would send: SHAs of 40 hex, ref names by git's rules, `OWNER/REPO`
names, logins, ids that fit in 63 bits, text that is valid UTF-8, comment bodies within GitHub's
65,536 characters. Anything else fails validation with the field named (a 422 at the door).
Clone URLs are never read from a payload: they come from GITHUB_API_URL (worker/links.py).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from worker.gitrefs import ref_name_problem, sha_problem
from worker.limits import MAX_COMMENT_CHARS, too_long
from worker.links import repo_problem

MAX_SHORT_CHARS = 100
"""Actions, user types and timestamps: GitHub's are a few words."""
LOGIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}(?:\[bot\])?")
"""GitHub logins (and `app[bot]`; `_` for managed users), never a path or a query."""
MAX_ID = 2**63 - 1
MAX_PULLS = 100
"""Pull requests a check run or suite lists (GitHub lists those whose head is the commit)."""
MAX_NAME_CHARS = 1000
"""Check run names and external ids: other apps' check runs reach skyrun too, with their own."""

P_UTF8 = "is not valid UTF-8 (it holds a lone surrogate)"
P_LOGIN = "is not a GitHub login"
P_TIME = "is not an ISO 8601 time"


def _fail(kind: str, message: str) -> PydanticCustomError:
    # A custom error keeps pydantic's "Value error, " prefix out of the message shown.
    return PydanticCustomError(kind, "{message}", {"message": message})


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail("utf8", P_UTF8) from None
    return value


def _short(value: str) -> str:
    if len(value) > MAX_SHORT_CHARS:
        raise _fail("too_long", too_long("the value", len(value), MAX_SHORT_CHARS))
    return _utf8(value)


def _sha(value: str) -> str:
    problem = sha_problem(value, what="the value")
    if problem:
        raise _fail("sha", problem)
    return value.lower()


def _ref(value: str) -> str:
    problem = ref_name_problem(value)
    if problem:
        raise _fail("ref", f"is not a valid git ref name: {problem}")
    return value


def _branch_or_empty(value: str) -> str:
    return value and _ref(value)


def _repo(value: str) -> str:
    problem = repo_problem(value)
    if problem:
        raise _fail("repo", problem)
    return value


def _login(value: str) -> str:
    if not LOGIN_RE.fullmatch(value):
        raise _fail("login", P_LOGIN)
    return value


def _time(value: str) -> str:
    _short(value)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _fail("time", P_TIME) from None
    return value


def _comment(value: str) -> str:
    if len(value) > MAX_COMMENT_CHARS:
        raise _fail("too_long", too_long("the comment", len(value), MAX_COMMENT_CHARS))
    return _utf8(value)


def _name(value: str) -> str:
    if len(value) > MAX_NAME_CHARS:
        raise _fail("too_long", too_long("the value", len(value), MAX_NAME_CHARS))
    return _utf8(value)


Short = Annotated[str, AfterValidator(_short)]
Sha = Annotated[str, AfterValidator(_sha)]
RefName = Annotated[str, AfterValidator(_ref)]
BranchOrEmpty = Annotated[str, AfterValidator(_branch_or_empty)]
RepoName = Annotated[str, AfterValidator(_repo)]
Login = Annotated[str, AfterValidator(_login)]
Time = Annotated[str, AfterValidator(_time)]
CommentBody = Annotated[str, AfterValidator(_comment)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Name = Annotated[str, AfterValidator(_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class User(_Model):
    login: Login
    type: Short = "User"


class Repository(_Model):
    full_name: RepoName
    default_branch: BranchOrEmpty = ""


class Installation(_Model):
    id: Id


class Delivery(_Model):
    """What every event skyrun handles carries."""

    repository: Repository | None = None
    installation: Installation | None = None
    sender: User | None = None


class PushEvent(Delivery):
    ref: RefName
    after: Sha
    deleted: bool = False


class IssueRef(_Model):
    number: Id
    pull_request: Any = None
    """Present (with links) only when the issue is a pull request; its contents are not read."""


class Comment(_Model):
    id: Id
    body: CommentBody = ""
    user: User
    created_at: Time


class IssueCommentEvent(Delivery):
    action: Short
    issue: IssueRef
    comment: Comment


class PullRepo(_Model):
    full_name: RepoName


class PullHead(_Model):
    ref: RefName
    sha: Sha
    repo: PullRepo | None = None
    """None when the head repository (a fork) was deleted."""


class PullBase(_Model):
    ref: RefName


class PullRequest(_Model):
    number: Id
    user: User
    head: PullHead
    base: PullBase


class PullRequestEvent(Delivery):
    action: Short
    number: Id
    pull_request: PullRequest


class MergeGroup(_Model):
    head_sha: Sha
    head_ref: RefName
    """`refs/heads/gh-readonly-queue/BASE/pr-N-SHA`: the group's temporary branch."""
    base_ref: RefName
    """`refs/heads/BASE`: the branch the group merges into."""


class MergeGroupEvent(Delivery):
    action: Short
    merge_group: MergeGroup
    reason: Short = ""
    """For `destroyed`: merged, invalidated or dequeued."""


class PullNumber(_Model):
    number: Id


class CheckRunRef(_Model):
    id: Id
    name: Name
    head_sha: Sha
    external_id: Name | None = None
    """skyrun sets it to the run id; other apps' check runs may carry anything (or nothing)."""
    pull_requests: list[PullNumber] = Field(default_factory=list, max_length=MAX_PULLS)


class RequestedAction(_Model):
    identifier: Short


class CheckRunEvent(Delivery):
    action: Short
    check_run: CheckRunRef
    requested_action: RequestedAction | None = None


class CheckSuiteRef(_Model):
    id: Id
    head_sha: Sha
    pull_requests: list[PullNumber] = Field(default_factory=list, max_length=MAX_PULLS)


class CheckSuiteEvent(Delivery):
    action: Short
    check_suite: CheckSuiteRef
