"""The runs list's filters, read and checked from a query string."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.pages.texts import BAD_CHOICE, BAD_PR
from worker.contract import RunState, Trigger

FILTERS = ("repo", "ref", "pr", "state", "trigger")
CHOICES = {"state": [s.value for s in RunState], "trigger": [t.value for t in Trigger]}


class FilterError(ValueError):
    pass


def parse_filters(params: Mapping[str, str]) -> dict[str, Any]:
    """The list filters in a query string, checked; raises FilterError saying what is wrong.

    The result is the keyword arguments of `worker.runcontrol.runs_query` (without the task
    queue, which the loader adds)."""
    filters: dict[str, Any] = {}
    for name in FILTERS:
        value = params.get(name, "").strip()
        if not value:
            continue
        if name == "pr":
            if not (value.isascii() and value.isdigit()):
                raise FilterError(BAD_PR.format(value=value))
            filters[name] = int(value)
            continue
        if name in CHOICES and value not in CHOICES[name]:
            raise FilterError(
                BAD_CHOICE.format(name=name, value=value, choices=", ".join(CHOICES[name]))
            )
        filters[name] = value
    state = filters.get("state")
    if state is not None and not RunState(state).finished:
        # A terminated workflow keeps its last state attribute; only open ones are live.
        filters["running_only"] = True
    return filters


def shown_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The filters a user set (what the form and the live fragment's query string carry)."""
    return {k: v for k, v in filters.items() if k in FILTERS}
