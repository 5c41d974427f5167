"""What state each day of a job is in, which days a backfill should run, and whether a day's data is complete."""

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg

from pulsecart_cli.dates import day_bounds
from pulsecart_cli.errors import UsageError
from pulsecart_cli.queries import one_row, query

RUN_STATUSES = ("running", "succeeded", "failed", "forgotten")
RUN_COLUMNS = ("id", "job", "run_date", "target", "status", "trigger", "airflow_run_id", "started_at",
               "finished_at", "duration_s", "rows_written", "error")


@dataclass(frozen=True)
class DayState:
    day: date
    state: str
    latest_status: str | None
    latest_run_id: int | None
    ever_succeeded: bool
    stale_reason: str | None  # why a day that succeeded needs to run again


def day_states(conn: psycopg.Connection, job: str, days: list[date]) -> dict[date, DayState]:
    if not days:
        return {}
    rows = conn.execute(query("status.day_states"), {"job": job, "start": min(days), "end": max(days)}).fetchall()
    wanted = set(days)
    states = {}
    for day, status, run_id, ever, late, scores_stale_since in rows:
        if day in wanted:
            reason = _stale_reason(late, scores_stale_since)
            states[day] = DayState(day, _state(status, ever, reason), status, run_id, ever, reason)
    return states


def _stale_reason(late_events: bool, scores_stale_since: list[date] | None) -> str | None:
    if late_events:
        return "events ingested after its latest successful run started"
    if scores_stale_since is None:
        return None
    if not scores_stale_since:
        return "scores computed by an earlier pulsecart or by hand: what they were computed from is not known"
    changed = ", ".join(str(d) for d in scores_stale_since)
    return f"scores older than the counts of {changed}"


def _state(latest_status: str | None, ever_succeeded: bool, stale_reason: str | None) -> str:
    if latest_status in ("running", "failed"):
        return latest_status
    if not ever_succeeded:
        return "missing"
    return "stale" if stale_reason else "succeeded"


@dataclass(frozen=True)
class Problem:
    """A day `status --check` reports: it did not succeed, or its result is stale."""

    job: str
    day: date
    state: str
    reason: str
    fix: str


def problems(states_by_job: dict[str, dict[date, DayState]]) -> list[Problem]:
    """Every day that is not succeeded-and-fresh, oldest first per job, with the command that fixes it."""
    found = []
    for job, states in states_by_job.items():
        for day, state in sorted(states.items()):
            if state.state == "succeeded":
                continue
            reason = {"missing": "no successful run",
                      "failed": f"latest run {state.latest_run_id} failed",
                      "running": f"run {state.latest_run_id} is still running",
                      "stale": state.stale_reason or "stale"}[state.state]
            wait = " --wait" if state.state == "running" else ""
            found.append(Problem(job, day, state.state, reason, f"pulsecart {job} --date {day}{wait}"))
    return found


@dataclass(frozen=True)
class Selection:
    only_missing: bool = False
    only_failed: bool = False
    stale: bool = False

    @property
    def filtering(self) -> bool:
        return self.only_missing or self.only_failed or self.stale


def choose_days(conn: psycopg.Connection, job: str, days: list[date], selection: Selection) -> list[tuple[date, str]]:
    """The days the selectors pick, oldest first, each with why: missing, failed or stale.
    With several selectors a day is chosen when any of them picks it."""
    chosen = []
    for day, state in sorted(day_states(conn, job, days).items()):
        if selection.only_missing and not state.ever_succeeded:
            chosen.append((day, "missing" if state.latest_status is None else f"missing (latest {state.latest_status})"))
        elif selection.only_failed and state.latest_status == "failed":
            chosen.append((day, "failed"))
        elif selection.stale and state.ever_succeeded and state.stale_reason:
            chosen.append((day, f"stale: {state.stale_reason}"))
    return chosen


def last_success(conn: psycopg.Connection, job: str, day: date) -> tuple | None:
    return conn.execute(query("status.last_success"), {"job": job, "day": day}).fetchone()


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


@dataclass(frozen=True)
class Completeness:
    complete: bool
    newest_event: datetime | None
    threshold: datetime


def completeness(conn: psycopg.Connection, day: date, grace: timedelta) -> Completeness:
    """A day is complete once the events table holds an event at or after D+1 00:00 UTC + grace:
    the consumer has moved past the day."""
    threshold = day_bounds(day)[1] + grace
    newest = one_row(conn.execute(query("status.newest_event")))[0]
    return Completeness(newest is not None and newest >= threshold, newest, threshold)


def recent_runs(conn: psycopg.Connection, job: str | None = None, status: str | None = None,
                day: date | None = None, limit: int = 20) -> list[dict]:
    rows = conn.execute(query("status.recent_runs"),
                        {"job": job, "status": status, "day": day, "limit": limit}).fetchall()
    return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in rows]
