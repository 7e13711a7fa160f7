"""What a signed request to `/slack/events` must look like before Bolt sees it (pure).

Bolt parses the body in its request constructor and reads fields without checking their types,
so a body that is not what Slack sends (invalid UTF-8, a `payload` that is not a JSON object or is
nested too deep, a `block_actions` whose fields have the wrong types) made it raise, and the
route answered 500. Here the body is decoded and parsed as Bolt would, and the kinds skyrun
handles are checked against models of the fields Bolt and skyrun read: anything else gets a 400
naming the problem, or a 404 when skyrun does not handle that kind of request at all.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError
from slack_bolt.request.internals import parse_body

E_ENCODING = "the body is not UTF-8 text"
E_NOT_JSON = "the body (or its `payload` field) is not a JSON object"
E_TOO_DEEP = "the body is nested too deeply to be a Slack request"
E_SHAPE = "unexpected Slack {kind}: {problem}"
E_UNREADABLE = "the request's fields do not have the types Slack sends"
NOT_HANDLED = "skyrun does not handle this kind of Slack request"
P_UTF8 = "is not valid UTF-8 (it holds a lone surrogate)"
P_ID = "is not a Slack id (letters, digits, '.', '_' and '-')"
ID_RE = re.compile(r"[A-Za-z0-9._-]{0,100}")
MAX_PROBLEMS = 3
MAX_ACTIONS = 25
"""Slack puts one action in a block_actions payload; 25 elements fit in an actions block."""

COMMAND = "command"
BLOCK_ACTIONS = "block_actions"
URL_VERIFICATION = "url_verification"
SSL_CHECK = "ssl_check"
EVENT_CALLBACK = "event_callback"


class RequestError(ValueError):
    """The request cannot be handled; `status` is the answer (400 or 404)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("utf8", P_UTF8) from None
    return value


def _identifier(value: str) -> str:
    if not ID_RE.fullmatch(value):
        raise PydanticCustomError("slack_id", P_ID)
    return value


Text = Annotated[str, AfterValidator(_utf8)]
SlackId = Annotated[str, AfterValidator(_identifier)]
"""User, channel, team and trigger ids: they reach mentions (`<@U…>`), run ids and queries."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class _Named(_Model):
    id: SlackId | None = None


class _Team(_Named):
    enterprise_id: SlackId | None = None


class SlashCommand(_Model):
    """A slash command's form (every value a string; a JSON body may try otherwise)."""

    command: Text
    text: Text = ""
    user_id: SlackId = ""
    channel_id: SlackId = ""
    response_url: Text = ""
    trigger_id: SlackId = ""
    team_id: SlackId | None = None
    enterprise_id: SlackId | None = None


class _User(_Model):
    id: SlackId
    team_id: SlackId | None = None


class _Action(_Model):
    action_id: Text
    block_id: Text | None = None
    value: Text | None = None
    type: Text | None = None


class _Container(_Model):
    type: Text | None = None
    message_ts: SlackId | None = None
    channel_id: SlackId | None = None
    is_ephemeral: bool | None = None


class _Authorization(_Model):
    enterprise_id: Text | None = None
    team_id: Text | None = None
    user_id: Text | None = None
    is_enterprise_install: bool | None = None


class _Message(_Model):
    ts: Text | None = None
    user: Text | None = None
    thread_ts: Text | None = None


class BlockActions(_Model):
    """A button click: what skyrun's listeners read and what Bolt reads to build its context."""

    type: Literal["block_actions"]
    user: _User
    actions: list[_Action] = Field(min_length=1, max_length=MAX_ACTIONS)
    team: SlackId | _Team | None = None
    enterprise: SlackId | _Named | None = None
    channel: SlackId | _Named | None = None
    container: _Container | None = None
    message: _Message | None = None
    authorizations: list[_Authorization] | None = None
    is_enterprise_install: bool | Text | None = None
    is_ext_shared_channel: bool | None = None
    response_url: Text | None = None
    trigger_id: SlackId | None = None
    api_app_id: Text | None = None
    function_data: None = None
    """Not part of a button click; Bolt would read it as a function execution."""
    event: None = None
    view: None = None
    response_urls: None = None


class UrlVerification(_Model):
    type: Literal["url_verification"]
    challenge: Text


class _Event(_Model):
    type: Text


class EventCallback(_Model):
    type: Literal["event_callback"]
    event: _Event


_MODELS: dict[str, type[_Model]] = {
    COMMAND: SlashCommand,
    BLOCK_ACTIONS: BlockActions,
    URL_VERIFICATION: UrlVerification,
    EVENT_CALLBACK: EventCallback,
}
HANDLED = (COMMAND, BLOCK_ACTIONS, URL_VERIFICATION, SSL_CHECK)
"""The kinds passed on to Bolt; it answers the two checks Slack makes of the endpoint itself."""


def parse(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The body as Bolt will read it (raises RequestError when it cannot be read)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(E_ENCODING) from None
    try:
        body = parse_body(text, content_type)
    except RecursionError:
        raise RequestError(E_TOO_DEEP) from None
    except ValueError:
        raise RequestError(E_NOT_JSON) from None
    if not isinstance(body, dict):
        raise RequestError(E_NOT_JSON)
    return body


def kind_of(body: dict[str, Any]) -> str:
    if "command" in body:
        return COMMAND
    if body.get("ssl_check") is not None:
        return SSL_CHECK
    kind = body.get("type")
    return kind if isinstance(kind, str) else ""


def check(body: dict[str, Any]) -> str:
    """The request's kind once its fields are what Slack sends (raises RequestError)."""
    kind = kind_of(body)
    model = _MODELS.get(kind)
    if model is not None:
        try:
            model.model_validate(body)
        except ValidationError as err:
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in err.errors(include_url=False, include_input=False)[:MAX_PROBLEMS]
            )
            raise RequestError(E_SHAPE.format(kind=kind, problem=problem)) from None
    if kind not in HANDLED:
        raise RequestError(NOT_HANDLED, status=404)
    return kind


def checked(raw: bytes, content_type: str | None) -> str:
    """Parse and check a signed body; the kind of request it is."""
    return check(parse(raw, content_type))
