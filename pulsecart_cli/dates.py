"""Days, windows and durations: what `--date`, `--window` and `--grace` accept, and how times are shown.
A day is the UTC day [D 00:00, D+1 00:00)."""

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from pulsecart_cli.errors import UsageError

# The days pulsecart accepts: Python's and PostgreSQL's common range (years 1 to 9999) less a year at
# each end, so every day a job reads (D-7 .. D+1), a --days look-back and a --grace stay inside both.
FIRST_DAY = date(2, 1, 1)
LAST_DAY = date(9998, 12, 31)


def today_utc() -> date:
    return datetime.now(UTC).date()


def parse_day(text: str, option: str = "--date") -> date:
    """`YYYY-MM-DD`, `yesterday`, `today` or `N days ago` (UTC), from FIRST_DAY to LAST_DAY."""
    value = " ".join(text.strip().lower().split())
    if value == "today":
        return today_utc()
    if value == "yesterday":
        return today_utc() - timedelta(days=1)
    if ago := re.fullmatch(r"(\d{1,7}) days? ago", value):
        days_ago = int(ago.group(1))
        if days_ago > (today_utc() - FIRST_DAY).days:
            raise UsageError(f"{option} {text!r} is out of range: expected a day from {FIRST_DAY} to {LAST_DAY}")
        return today_utc() - timedelta(days=days_ago)
    try:
        day = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise UsageError(f"invalid {option} {text!r}: expected YYYY-MM-DD, 'yesterday', 'today' or 'N days ago'")
    return check_day(day, option)


def check_day(day: date, option: str) -> date:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise UsageError(f"{option} {day} is out of range: expected a day from {FIRST_DAY} to {LAST_DAY}")
    return day


def parse_window(text: str) -> list[date]:
    """`A..B`, both ends included, oldest first."""
    start_text, sep, end_text = text.partition("..")
    if not sep or not start_text or not end_text:
        raise UsageError(f"invalid window {text!r}: expected A..B, e.g. 2025-03-01..2025-03-07")
    start, end = parse_day(start_text, "--window"), parse_day(end_text, "--window")
    if end < start:
        raise UsageError(f"reversed window {text!r}: {start} is after {end}")
    return days_between(start, end)


def look_back(end_text: str, days: int) -> list[date]:
    """`status --end E --days N`: the N days ending on E, oldest first. E is not after today (UTC): a day
    that has not happened has no runs, and the fix commands status prints would be refused."""
    last = not_after_today(parse_day(end_text, "--end"), "--end", "status shows days up to today")
    first = last - timedelta(days=days - 1)
    if first < FIRST_DAY:
        raise UsageError(f"--days {days} from --end {last} starts before {FIRST_DAY}, the first day accepted")
    return days_between(first, last)


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def select_days(date_text: str | None, window_text: str | None, allow_future: bool = False) -> list[date]:
    """Exactly one of --date and --window, never after today (UTC): a day that has not happened has no data
    (``allow_future``: for removing what an earlier pulsecart wrote for such days)."""
    if date_text is not None and window_text is None:
        days = [parse_day(date_text)]
    elif window_text is not None and date_text is None:
        days = parse_window(window_text)
    else:
        raise UsageError("give exactly one of --date D or --window A..B")
    if not allow_future:
        not_after_today(days[-1], "--date" if date_text is not None else "--window",
                        "a day can be processed from the day itself on")
    return days


def not_after_today(day: date, option: str, why: str) -> date:
    """``day``, refused (one line, exit 2) when it is after today (UTC)."""
    today = today_utc()
    if day > today:
        raise UsageError(f"{option}: {day} is in the future (today is {today} UTC); {why}")
    return day


def day_list(days: Iterable[date]) -> str:
    """Days as compact text, consecutive days as ranges: `2025-03-01..2025-03-03, 2025-03-05`."""
    ranges: list[list[date]] = []
    for day in sorted(set(days)):
        if ranges and (day - ranges[-1][1]).days == 1:
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in ranges)


MAX_DURATION = timedelta(days=30)


def parse_duration(text: str, option: str = "--grace") -> timedelta:
    """`30m`, `2h`, `45s`, `1h30m` or `0`, at most MAX_DURATION."""
    match = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*", text, re.ASCII)
    if text.strip() == "0":
        return timedelta(0)
    if not match or not any(match.groups()):
        raise UsageError(f"invalid {option} {text!r}: expected e.g. 30m, 2h, 45s or 1h30m")
    hours, minutes, seconds = (_bounded_int(g) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total > MAX_DURATION.total_seconds():
        raise UsageError(f"{option} {text.strip()!r} is out of range: expected at most "
                         f"{MAX_DURATION.days * 24}h ({MAX_DURATION.days} days)")
    return timedelta(seconds=total)


def _bounded_int(digits: str | None) -> int:
    """The number, or 10**12 when it is longer (int() refuses thousands of digits; Python ints never overflow)."""
    digits = (digits or "").lstrip("0") or "0"
    return int(digits) if len(digits) <= 12 else 10**12


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The half-open UTC range of a day, as aware datetimes (bound as timestamptz)."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def when(moment: datetime | None) -> str:
    """A time for people: UTC, with the offset shown."""
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S%z}"
