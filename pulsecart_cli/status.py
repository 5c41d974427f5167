"""What state each day of a job is in, which days `status --check` reports, whether a day's data is
complete, and the ledger's recent runs."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

import psycopg
from psycopg.rows import class_row, dict_row

from pulsecart_cli.dates import day_bounds
from pulsecart_cli.ledger import RunStatus
from pulsecart_cli.queries import one_row, query
from pulsecart_cli.registry import DAILY_JOBS


class DayStatus(StrEnum):
    """Where a day of a job stands, from its runs in the ledger and the data since."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"  # no run of it ever succeeded
    STALE = "stale"  # succeeded, but its result no longer reflects the data (``DayState.stale_reason``)
    RUNNING = "running"


@dataclass(frozen=True)
class DayState:
    day: date
    state: DayStatus
    latest_status: RunStatus | None
    latest_run_id: int | None
    ever_succeeded: bool
    stale_reason: str | None  # why a day that succeeded needs to run again, or the earlier days it reads do
    late_inputs: tuple[date, ...] = ()  # earlier days it reads whose events arrived late: their rerun refreshes it
    stale_itself: bool = False  # it needs a rerun of its own (not only of its late inputs)


@dataclass(frozen=True)
class _DayRow:
    """A row of ``status.day_states``."""

    day: date
    status: str | None
    id: int | None
    ever_succeeded: bool
    late_events: bool
    scores_stale_since: list[date] | None


def day_states(conn: psycopg.Connection, job: str, days: list[date]) -> dict[date, DayState]:
    if not days:
        return {}
    reads_back = timedelta(days=DAILY_JOBS[job].reads_days_before)
    rows = conn.cursor(row_factory=class_row(_DayRow)).execute(
        query("status.day_states"), {"job": job, "start": min(days) - reads_back, "end": max(days)}).fetchall()
    late = sorted(row.day for row in rows if row.late_events)
    wanted = set(days)
    states = {}
    for row in rows:
        if row.day in wanted:
            status = RunStatus(row.status) if row.status is not None else None
            own_reason = _stale_reason(row.late_events, row.scores_stale_since)
            late_inputs = tuple(d for d in late if row.day - reads_back <= d < row.day)
            reason = "; ".join(r for r in (own_reason, _late_inputs_reason(late_inputs)) if r) or None
            states[row.day] = DayState(row.day, _state(status, row.ever_succeeded, reason), status, row.id,
                                       row.ever_succeeded, reason, late_inputs, own_reason is not None)
    return states


LATE_EVENTS = "events ingested after its latest successful run started"


def _stale_reason(late_events: bool, scores_stale_since: list[date] | None) -> str | None:
    if late_events:
        return LATE_EVENTS
    if scores_stale_since is None:
        return None
    if not scores_stale_since:
        return "scores computed by an earlier pulsecart, by hand, or before a day they read was forgotten: what they were computed from is not known"
    changed = ", ".join(str(d) for d in scores_stale_since)
    return f"scores older than the counts of {changed}"


def _late_inputs_reason(late_inputs: tuple[date, ...]) -> str | None:
    if not late_inputs:
        return None
    read = ", ".join(str(d) for d in late_inputs)
    return f"reads {read}: events ingested after that day's latest successful run started"


def _state(latest_status: RunStatus | None, ever_succeeded: bool, stale_reason: str | None) -> DayStatus:
    if latest_status == RunStatus.RUNNING:
        return DayStatus.RUNNING
    if latest_status == RunStatus.FAILED:
        return DayStatus.FAILED
    if not ever_succeeded:
        return DayStatus.MISSING
    return DayStatus.STALE if stale_reason else DayStatus.SUCCEEDED


@dataclass(frozen=True)
class Problem:
    """A day `status --check` reports: it did not succeed, or its result is stale."""

    job: str
    day: date
    state: DayStatus
    reason: str
    fix: str


def problems(states_by_job: dict[str, dict[date, DayState]]) -> list[Problem]:
    """Every day that is not succeeded-and-fresh, oldest first per job, with the command that fixes it."""
    found = []
    for job, states in states_by_job.items():
        for day, state in sorted(states.items()):
            if state.state == DayStatus.SUCCEEDED:
                continue
            forgotten = state.latest_status == RunStatus.FORGOTTEN
            reason = {DayStatus.MISSING: f"forgotten by run {state.latest_run_id}" if forgotten else "no successful run",
                      DayStatus.FAILED: f"latest run {state.latest_run_id} failed",
                      DayStatus.RUNNING: f"run {state.latest_run_id} is still running",
                      DayStatus.STALE: state.stale_reason or "stale"}[state.state]
            wait = " --wait" if state.state == DayStatus.RUNNING else ""
            fix = f"pulsecart {job} --date {day}{wait}"
            if state.state == DayStatus.STALE and state.late_inputs:  # rerunning its late inputs refreshes it
                first, last = state.late_inputs[0], day if state.stale_itself else state.late_inputs[-1]
                fix = f"pulsecart {job} --date {first}" if first == last else \
                    f"pulsecart {job} --window {first}..{last} --stale"
            found.append(Problem(job, day, state.state, reason, fix))
    return found


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
    """The ledger's rows, newest first, as dicts in the query's column order (the `runs --json` shape)."""
    return conn.cursor(row_factory=dict_row).execute(
        query("status.recent_runs"), {"job": job, "status": status, "day": day, "limit": limit}).fetchall()
