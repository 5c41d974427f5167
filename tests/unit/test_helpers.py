"""The small pure helpers: named SQL, lock keys, UUIDv7, first lines of errors, interruptions, topics."""

import signal
import uuid
from datetime import date

import pytest

from pulsecart_cli.errors import EXIT_INTERRUPTED, ConfigError, Interrupted, first_line
from pulsecart_cli.ledger import Invocation
from pulsecart_cli.pubsub import TOPICS, TopicPair, resolve_topics
from pulsecart_cli.queries import parse_named, query
from pulsecart_cli.seed import _uuid7_text
from pulsecart_cli.units import lock_keys

INT32 = range(-(2**31), 2**31)


def test_parse_named_splits_on_name_comments():
    text = """
-- a file comment before the first name is dropped
-- name: first
SELECT 1;

--name:second$
SELECT %(day)s
  -- a comment inside a query stays
FROM t;
"""
    assert parse_named(text) == {"first": "SELECT 1;",
                                 "second$": "SELECT %(day)s\n  -- a comment inside a query stays\nFROM t;"}
    assert parse_named("SELECT 1") == {}


def test_query_finds_a_shipped_query_and_names_a_missing_one():
    assert "pg_try_advisory_lock" in query("ledger.try_lock")
    with pytest.raises(LookupError, match=r"^no query named 'ledger\.nope' in sql/queries$"):
        query("ledger.nope")
    with pytest.raises(LookupError, match=r"^no query named 'nofile\.x' in sql/queries$"):
        query("nofile.x")


def test_lock_keys_never_change():
    """Two versions of pulsecart running side by side (a rolling deploy) must take the same lock."""
    assert lock_keys("aggregate", date(2025, 3, 3), None) == {"job_key": 1699514041, "unit_key": 739313}
    assert lock_keys("reconcile", None, "pulsecart.commerce-events") == {"job_key": -1919310463,
                                                                          "unit_key": 178528031}


def test_lock_keys_are_int4_and_tell_jobs_and_units_apart():
    keys = [lock_keys(job, day, None) for job in ("aggregate", "metrics")
            for day in (date(2, 1, 1), date(2025, 3, 3), date(2025, 3, 4), date(9998, 12, 31))]
    keys += [lock_keys("reconcile", None, pair.original) for pair in resolve_topics("all")]
    assert all(k["job_key"] in INT32 and k["unit_key"] in INT32 for k in keys)
    assert len({(k["job_key"], k["unit_key"]) for k in keys}) == len(keys)
    assert len({k["job_key"] for k in keys}) == 3


def test_uuid7_is_a_version_7_rfc_9562_uuid_led_by_its_millisecond():
    ms = 1_740_787_200_123
    text = _uuid7_text(ms, 0x2AB_CDEF0123_456789AB)
    value = uuid.UUID(text)
    assert str(value) == text
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert value.int >> 80 == ms
    assert _uuid7_text(0, 0) == "00000000-0000-7000-8000-000000000000"
    assert _uuid7_text(ms, 2**74 - 1) < _uuid7_text(ms + 1, 0)  # time-ordered as text too


class _GoogleLike(Exception):
    message = "  Topic not found\nmore detail"


@pytest.mark.parametrize(("error", "default", "expected"), [
    (ValueError("first\nsecond"), "", "first"),
    (ValueError("\n  first  \nsecond"), "", "first  "),
    (ValueError(), "ValueError", "ValueError"),
    (_GoogleLike("ignored str"), "", "Topic not found"),
    (ConfigError("bad URL\nhint"), "", "bad URL"),
    ("error text\ntraceback", "", "error text"),
    ("", "failed", "failed"),
    (None, "failed", "failed"),
])
def test_first_line(error, default, expected):
    assert first_line(error, default) == expected


@pytest.mark.parametrize(("signum", "reason", "code"), [
    (signal.SIGINT, "interrupted", EXIT_INTERRUPTED),
    (signal.SIGTERM, "terminated by SIGTERM", 143),
    (signal.SIGHUP, "terminated by SIGHUP", 129),
])
def test_an_interruption_names_its_signal_and_exit_code(signum, reason, code):
    interruption = Interrupted(signum)
    assert (interruption.reason, interruption.exit_code) == (reason, code)
    assert not isinstance(interruption, Exception)  # no `except Exception` takes it for the work's failure


def test_invocation_is_airflow_under_airflow_unless_told(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CTX_DAG_RUN_ID", raising=False)
    assert Invocation.detect(None) == Invocation("manual", None)
    assert Invocation.detect("cron") == Invocation("cron", None)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2025-03-04")
    assert Invocation.detect(None) == Invocation("airflow", "scheduled__2025-03-04")
    assert Invocation.detect("manual") == Invocation("manual", "scheduled__2025-03-04")


def test_topic_pair_names():
    pair = TopicPair("commerce-events")
    assert (pair.original, pair.dead_letter, pair.reconciler_subscription, pair.consumer_subscription) == (
        "pulsecart.commerce-events", "pulsecart.commerce-events.dead-letter",
        "sub-pulsecart.commerce-events.dead-letter-reconciler", "sub-pulsecart.commerce-events")


@pytest.mark.parametrize("name", ["user-actions", "pulsecart.user-actions", "pulsecart.user-actions.dead-letter"])
def test_resolve_topics_takes_short_and_full_names(name):
    assert resolve_topics(name) == [TopicPair("user-actions")]


def test_resolve_topics_all_and_unknown():
    assert [p.short for p in resolve_topics("all")] == list(TOPICS)
    with pytest.raises(ConfigError) as raised:
        resolve_topics("orders")
    assert raised.value.message == ("unknown topic 'orders': expected all, commerce-events, user-actions, "
                                    "system-events or their full names (pulsecart.commerce-events)")
    assert raised.value.exit_code == 2


def test_a_day_leaves_to_its_own_turn_only_the_run_days_within_the_week_after_it():
    from datetime import timedelta

    from pulsecart_cli.runner import _later_within_a_week

    days = [date(2025, 3, 1) + timedelta(days=n) for n in range(400)]
    assert _later_within_a_week(days, 0) == frozenset(days[1:7])
    assert _later_within_a_week(days, 398) == frozenset(days[399:])
    assert _later_within_a_week([date(2025, 3, 1), date(2025, 3, 7), date(2025, 3, 8)], 0) == {date(2025, 3, 7)}
