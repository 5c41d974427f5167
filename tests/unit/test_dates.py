"""Days, windows, durations and times for people: pure parsing, no database."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from pulsecart_cli import dates
from pulsecart_cli.dates import (
    FIRST_DAY,
    LAST_DAY,
    MAX_DURATION,
    day_bounds,
    days_between,
    parse_day,
    parse_duration,
    parse_window,
    select_days,
    when,
)
from pulsecart_cli.errors import UsageError

TODAY = date(2025, 3, 10)


@pytest.fixture
def today(monkeypatch):
    """Pin today (UTC) to 2025-03-10."""
    monkeypatch.setattr(dates, "today_utc", lambda: TODAY)
    return TODAY


@pytest.mark.parametrize(("parse", "text", "expected"), [
    (parse_day, "2025-03-01", date(2025, 3, 1)),
    (parse_day, " 2025-03-01 ", date(2025, 3, 1)),
    (parse_day, "today", TODAY),
    (parse_day, "Yesterday", TODAY - timedelta(days=1)),
    (parse_day, "30 days ago", TODAY - timedelta(days=30)),
    (parse_day, " 1  day ago", TODAY - timedelta(days=1)),
    (parse_day, str(FIRST_DAY), FIRST_DAY),
    (parse_day, str(LAST_DAY), LAST_DAY),
    (parse_duration, "0", timedelta(0)),
    (parse_duration, " 0 ", timedelta(0)),
    (parse_duration, "45s", timedelta(seconds=45)),
    (parse_duration, "30m", timedelta(minutes=30)),
    (parse_duration, "2h", timedelta(hours=2)),
    (parse_duration, "1h30m", timedelta(hours=1, minutes=30)),
    (parse_duration, "1h 30m 15s", timedelta(hours=1, minutes=30, seconds=15)),
    (parse_duration, "720h", MAX_DURATION),
    (parse_duration, "0030m", timedelta(minutes=30)),
])
def test_parses(today, parse, text, expected):
    assert parse(text) == expected


BAD_DAY = "invalid --date {!r}: expected YYYY-MM-DD, 'yesterday', 'today' or 'N days ago'"
DAY_OUT_OF_RANGE = "--date {} is out of range: expected a day from 0002-01-01 to 9998-12-31"
BAD_DURATION = "invalid --grace {!r}: expected e.g. 30m, 2h, 45s or 1h30m"
DURATION_OUT_OF_RANGE = "--grace {!r} is out of range: expected at most 720h (30 days)"


@pytest.mark.parametrize(("parse", "text", "message"), [
    *[(parse_day, text, BAD_DAY) for text in ("2025-02-29", "2025-3-1", "20250301", "", "-3 days ago", "3 days")],
    *[(parse_day, text, DAY_OUT_OF_RANGE) for text in ("0001-01-01", "9999-12-31")],
    *[(parse_duration, text, BAD_DURATION) for text in ("", "30", "1d", "30m2h", "-5m")],
    *[(parse_duration, text, DURATION_OUT_OF_RANGE) for text in ("721h", "9" * 5000 + "s")],
])
def test_bad_input_is_a_usage_error(parse, text, message):
    with pytest.raises(UsageError) as raised:
        parse(text)
    assert raised.value.message == message.format(text)
    assert raised.value.exit_code == 2


def test_parse_window_is_every_day_oldest_first():
    assert parse_window("2025-02-27..2025-03-02") == [date(2025, 2, 27), date(2025, 2, 28), date(2025, 3, 1),
                                                       date(2025, 3, 2)]
    assert parse_window("2025-03-01..2025-03-01") == [date(2025, 3, 1)]


@pytest.mark.parametrize(("text", "message"), [
    ("2025-03-01", "invalid window '2025-03-01': expected A..B, e.g. 2025-03-01..2025-03-07"),
    ("2025-03-01..", "invalid window '2025-03-01..': expected A..B, e.g. 2025-03-01..2025-03-07"),
    ("2025-03-02..2025-03-01", "reversed window '2025-03-02..2025-03-01': 2025-03-02 is after 2025-03-01"),
    ("2025-03-01..soon", "invalid --window 'soon': expected YYYY-MM-DD, 'yesterday', 'today' or 'N days ago'"),
])
def test_a_bad_window_is_a_usage_error(text, message):
    with pytest.raises(UsageError, match="^" + message.replace(".", r"\.") + "$"):
        parse_window(text)


def test_days_between_includes_both_ends():
    assert days_between(date(2024, 12, 31), date(2025, 1, 1)) == [date(2024, 12, 31), date(2025, 1, 1)]
    assert days_between(date(2025, 1, 2), date(2025, 1, 1)) == []


def test_select_days_takes_exactly_one_of_date_and_window(today):
    assert select_days("2025-03-09", None) == [date(2025, 3, 9)]
    assert select_days(None, "2025-03-08..today") == [date(2025, 3, 8), date(2025, 3, 9), TODAY]
    for date_text, window_text in ((None, None), ("2025-03-09", "2025-03-08..2025-03-09")):
        with pytest.raises(UsageError, match=r"^give exactly one of --date D or --window A\.\.B$"):
            select_days(date_text, window_text)


@pytest.mark.parametrize(("date_text", "window_text", "message"), [
    ("2025-03-11", None, ("--date: 2025-03-11 is in the future (today is 2025-03-10 UTC); "
                         "a day can be processed from the day itself on")),
    (None, "2025-03-09..2025-03-11", ("--window: 2025-03-11 is in the future (today is 2025-03-10 UTC); "
                                     "a day can be processed from the day itself on")),
])
def test_select_days_refuses_the_future(today, date_text, window_text, message):
    with pytest.raises(UsageError) as raised:
        select_days(date_text, window_text)
    assert raised.value.message == message


def test_day_bounds_are_the_half_open_utc_day():
    assert day_bounds(date(2025, 3, 1)) == (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC))


@pytest.mark.parametrize(("moment", "shown"), [
    (None, "-"),
    (datetime(2025, 3, 1, 12, 30, 5, 999, tzinfo=UTC), "2025-03-01 12:30:05+0000"),
    (datetime(2025, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))), "2025-02-28 23:00:00+0000"),
])
def test_when_is_utc_with_the_offset(moment, shown):
    assert when(moment) == shown
