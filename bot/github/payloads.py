"""The parts of GitHub's webhook payloads skyrun reads, validated (anything else is ignored)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class User(_Model):
    login: str
    type: str = "User"


class Repository(_Model):
    full_name: str
    clone_url: str = ""
    default_branch: str = ""


class Installation(_Model):
    id: int


class Delivery(_Model):
    """What every event skyrun handles carries."""

    repository: Repository | None = None
    installation: Installation | None = None
    sender: User | None = None


class PushEvent(Delivery):
    ref: str
    after: str
    deleted: bool = False


class IssueRef(_Model):
    number: int
    pull_request: dict[str, object] | None = None
    """Present (with links) only when the issue is a pull request."""


class Comment(_Model):
    id: int
    body: str = ""
    user: User
    created_at: str


class IssueCommentEvent(Delivery):
    action: str
    issue: IssueRef
    comment: Comment


class PullRepo(_Model):
    full_name: str
    clone_url: str = ""


class PullRef(_Model):
    ref: str
    sha: str
    repo: PullRepo | None = None
    """None when the head repository (a fork) was deleted."""


class PullRequest(_Model):
    number: int
    user: User
    head: PullRef
    base: PullRef


class PullRequestEvent(Delivery):
    action: str
    number: int
    pull_request: PullRequest
