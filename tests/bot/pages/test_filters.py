"""The runs list's query-string filters."""

from __future__ import annotations

import re

import pytest

from bot.pages.filters import FilterError, parse_filters, shown_filters
from bot.pages.texts import BAD_PR
from worker.runcontrol import runs_query


def test_filters_are_checked_and_live_states_only_match_open_runs() -> None:
    assert parse_filters({"repo": " acme/x ", "pr": "7", "ref": ""}) == {"repo": "acme/x", "pr": 7}
    assert parse_filters({"state": "running"}) == {"state": "running", "running_only": True}
    assert parse_filters({"state": "failed"}) == {"state": "failed"}
    with pytest.raises(FilterError, match=re.escape(BAD_PR.format(value="x"))):
        parse_filters({"pr": "x"})
    with pytest.raises(FilterError, match="unknown trigger 'fax'"):
        parse_filters({"trigger": "fax"})
    with pytest.raises(FilterError, match="unknown state 'sleeping'; use one of: queued"):
        parse_filters({"state": "sleeping"})
    for hostile in ("-1", "7 OR 1=1", "1e3", "٣", "²"):  # int("²") would raise
        with pytest.raises(FilterError):
            parse_filters({"pr": hostile})


def test_filters_are_runs_query_keywords_and_only_set_ones_are_shown() -> None:
    filters = parse_filters({"repo": "a/b", "state": "queued", "unknown": "x"})
    assert shown_filters(filters) == {"repo": "a/b", "state": "queued"}
    query = runs_query(task_queue="q'1", **filters)
    assert "SkyrunRepo = 'a/b'" in query and "ExecutionStatus = 'Running'" in query
    assert query.endswith("TaskQueue = 'q\\'1'")
    # A quote in a value stays inside its string literal.
    assert "SkyrunRepo = 'a\\' OR 1=1'" in runs_query(**parse_filters({"repo": "a' OR 1=1"}))
