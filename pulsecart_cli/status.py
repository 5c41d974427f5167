"""What state each day of a job is in, which days `status --check` reports, whether a day's data is
complete, and the ledger's recent runs."""

import os
import socket
import statistics
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from pulsecart_cli import __version__
from pulsecart_cli.dates import day_bounds
from pulsecart_cli.ledger import Invocation, RunStatus
from pulsecart_cli.queries import one_row, query
from pulsecart_cli.registry import DAILY_JOBS


class DayState(StrEnum):
    """Where a day of a job stands, from its runs in the ledger and the data since."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"  # no run of it ever succeeded
    STALE = "stale"  # succeeded, but its result no longer reflects the data (``DayStanding.stale_reason``)
    RUNNING = "running"
    BEFORE_EVENTS = "before events"  # never run, and before the first event of the table: nothing to do
    SUSPECT = "suspect"  # succeeded, but its figures are far from its usual (``DayStanding.suspect_reason``): a warning


@dataclass(frozen=True)
class DayStanding:
    day: date
    state: DayState
    latest_status: RunStatus | None
    latest_run_id: int | None
    ever_succeeded: bool
    stale_reason: str | None  # why a day that succeeded needs to run again, or the earlier days it reads do
    # Earlier days it reads that need a run of their own (their events changed since, they were never run or
    # their latest run failed), each with why: running them refreshes this day too.
    stale_inputs: tuple[tuple[date, str], ...] = ()
    stale_itself: bool = False  # it needs a rerun of its own (not only of its stale inputs)
    suspect_reason: str | None = None  # which of its figures is far from the usual, and the usual value


@dataclass(frozen=True)
class _DayRow:
    """A row of ``status.day_states``."""

    day: date
    status: str | None
    id: int | None
    ever_succeeded: bool
    late_events: bool
    scores_stale_since: list[date] | None
    scores_pruned_at: datetime | None
    has_events: bool
    first_success: date | None
    first_event: datetime | None


def day_states(conn: psycopg.Connection, job: str, days: list[date]) -> dict[date, DayStanding]:
    if not days:
        return {}
    rules = DAILY_JOBS[job]  # its staleness rules: which earlier days it reads, whether it keeps scores of them
    reads_back = timedelta(days=rules.reads_days_before)
    rows = conn.cursor(row_factory=class_row(_DayRow)).execute(query("status.day_states"), {
        "job": job, "start": min(days) - reads_back, "end": max(days), "reads_days_before": rules.reads_days_before,
        "scores_from_days_before": rules.scores_from_days_before}).fetchall()
    rerun = sorted((row.day, why) for row in rows if (why := _needs_own_run(row)))
    wanted = set(days)
    states = {}
    for row in rows:
        if row.day in wanted:
            status = RunStatus(row.status) if row.status is not None else None
            own_reason = _stale_reason(row.late_events, row.scores_stale_since, row.scores_pruned_at)
            inputs = tuple((d, why) for d, why in rerun if row.day - reads_back <= d < row.day)
            reason = "; ".join(r for r in (own_reason, _inputs_reason(inputs)) if r) or None
            state = _state(status, row.ever_succeeded, reason)
            if state == DayState.MISSING and status is None and _before(row.day, row.first_event):
                state = DayState.BEFORE_EVENTS
            states[row.day] = DayStanding(row.day, state, status, row.id, row.ever_succeeded, reason, inputs,
                                          own_reason is not None)
    return states


def _before(day: date, first_event: datetime | None) -> bool:
    """The day ends before the events table's first event (or the table is empty): the history has not begun."""
    return first_event is None or day_bounds(day)[1] <= first_event


def _needs_own_run(row: _DayRow) -> str | None:
    """Why a day that later days read must run again: its events changed since its latest success; or, from
    the job's first success on, it has events and no success, or its latest run failed."""
    if row.ever_succeeded and row.late_events:
        return "events changed after that day's latest successful run read them"
    if row.first_success is None or row.day < row.first_success or not row.has_events:
        return None
    if row.status == RunStatus.FAILED:
        return "that day's latest run failed"
    return None if row.ever_succeeded else "that day was never run"


LATE_EVENTS = "its events changed after its latest successful run read them"


def _stale_reason(late_events: bool, scores_stale_since: list[date] | None,
                  scores_pruned_at: datetime | None) -> str | None:
    if late_events:
        return LATE_EVENTS
    if scores_stale_since is None:
        return None
    if scores_pruned_at is not None:
        return f"scores removed by `pulsecart prune` on {scores_pruned_at:%Y-%m-%d}: a rerun of the day rebuilds them"
    if not scores_stale_since:
        return "scores computed by an earlier pulsecart, by hand, or before a day they read was forgotten: what they were computed from is not known"
    changed = ", ".join(str(d) for d in scores_stale_since)
    return f"scores older than the counts of {changed}"


def _inputs_reason(inputs: tuple[tuple[date, str], ...]) -> str | None:
    if not inputs:
        return None
    reasons: dict[str, list[str]] = {}
    for day, why in inputs:
        reasons.setdefault(why, []).append(str(day))
    return "; ".join(f"reads {', '.join(days)}: {why}" for why, days in reasons.items())


def _state(latest_status: RunStatus | None, ever_succeeded: bool, stale_reason: str | None) -> DayState:
    if latest_status == RunStatus.RUNNING:
        return DayState.RUNNING
    if latest_status == RunStatus.FAILED:
        return DayState.FAILED
    if not ever_succeeded:
        return DayState.MISSING
    return DayState.STALE if stale_reason else DayState.SUCCEEDED


@dataclass(frozen=True)
class Problem:
    """A day `status --check` reports: it did not succeed, or its result is stale."""

    job: str
    day: date
    state: DayState
    reason: str
    fix: str


def problems(states_by_job: dict[str, dict[date, DayStanding]]) -> list[Problem]:
    """Every day that is not succeeded-and-fresh, oldest first per job, with the command that fixes it."""
    found = []
    for job, states in states_by_job.items():
        for day, state in sorted(states.items()):
            if state.state in (DayState.SUCCEEDED, DayState.BEFORE_EVENTS):
                continue
            forgotten = state.latest_status == RunStatus.FORGOTTEN
            reason = {DayState.MISSING: f"forgotten by run {state.latest_run_id}" if forgotten else "no successful run",
                      DayState.FAILED: f"latest run {state.latest_run_id} failed",
                      DayState.RUNNING: f"run {state.latest_run_id} is still running",
                      DayState.STALE: state.stale_reason or "stale",
                      DayState.SUSPECT: f"{state.suspect_reason} (a warning: the results stand; a rerun after "
                                        "late events clears it when the figures recover)"}[state.state]
            wait = " --wait" if state.state == DayState.RUNNING else ""
            fix = f"pulsecart {job} --date {day}{wait}"
            if state.state == DayState.STALE and state.stale_inputs:  # rerunning its inputs refreshes it
                first, last = state.stale_inputs[0][0], day if state.stale_itself else state.stale_inputs[-1][0]
                fix = f"pulsecart {job} --date {first}" if first == last else \
                    f"pulsecart {job} --window {first}..{last} --stale"
            found.append(Problem(job, day, state.state, reason, fix))
    return found


DEFAULT_MIN_SHARE = 0.3   # below this share of its usual volume a day waits (check-complete exits 4)
WARNING_SHARE = 0.7       # below this share of its usual volume a day that ran is suspect
MAX_MOVE = 0.5            # orders or revenue this far (±) from their usual make a metrics day suspect
USUAL_WEEKS = 4
MIN_USUAL_WEEKS = 2


def usual_figure(weeks: list[Any]) -> Any:
    """The median of the same weekday over the previous weeks with the figure; None with fewer than two."""
    return statistics.median(weeks) if len(weeks) >= MIN_USUAL_WEEKS else None


def usual_volume(weeks: list[int]) -> int | None:
    usual = usual_figure(weeks)
    return None if usual is None else int(usual)


def usual_phrase(day: date, weeks: list[Any], usual: Any) -> str:
    """How a usual figure is named: ``median of 4 Tuesdays: 1,000``."""
    return f"median of {len(weeks)} {day:%A}s: {usual:,}"


@dataclass(frozen=True)
class _FiguresRow:
    """A row of ``status.day_figures``."""

    day: date
    events: int | None
    orders: int | None
    revenue: Decimal | None
    usual_events: list[int]
    usual_orders: list[int]
    usual_revenue: list[Decimal]


def with_suspect_days(conn: psycopg.Connection, states_by_job: dict[str, dict[date, DayStanding]],
                      window: list[date]) -> dict[str, dict[date, DayStanding]]:
    """The succeeded days whose recorded figures are far from the median of the same weekday over the four
    weeks before (two weeks at least) turned suspect, each with why, naming the usual: events below
    WARNING_SHARE of it (every job reads them), and the figures a job watches (its registry entry) more than
    MAX_MOVE above or below it. Only `status` shows it: choosing the days to run does not need it."""
    rows = _day_figures(conn, window[0], window[-1])
    marked = {}
    for job, states in states_by_job.items():
        reasons = {row.day: why for row in rows if (why := _suspect_reason(row, DAILY_JOBS[job].watched_figures))}
        marked[job] = {day: replace(state, state=DayState.SUSPECT, suspect_reason=reasons[day])
                       if state.state == DayState.SUCCEEDED and day in reasons else state
                       for day, state in states.items()}
    return marked


def _day_figures(conn: psycopg.Connection, start: date, end: date) -> list[_FiguresRow]:
    return conn.cursor(row_factory=class_row(_FiguresRow)).execute(
        query("status.day_figures"), {"start": start, "end": end, "weeks": USUAL_WEEKS}).fetchall()


def _suspect_reason(row: _FiguresRow, watched: tuple[str, ...]) -> str | None:
    reasons = []
    usual = usual_volume(row.usual_events)
    if row.events is not None and usual and row.events < WARNING_SHARE * usual:
        reasons.append(f"{row.events / usual:.0%} of its usual events ({row.events:,}; "
                       f"{usual_phrase(row.day, row.usual_events, usual)})")
    for name in watched:
        value, weeks = getattr(row, name), getattr(row, f"usual_{name}")
        median = usual_figure(weeks)
        if value is not None and median and abs(value / median - 1) > MAX_MOVE:
            reasons.append(f"{name} {value:,} is {value / median - 1:+.0%} against its usual "
                           f"({usual_phrase(row.day, weeks, median)})")
    return "; ".join(reasons) or None


@dataclass(frozen=True)
class Completeness:
    day: date
    past_the_day: bool  # the consumer has moved past the day (an event at or after D+1 00:00 + grace)
    newest_event: datetime | None
    threshold: datetime
    events: int  # D's events now
    usual_weeks: list[int]  # the same weekday's event counts in the four weeks before, as aggregated
    min_share: float
    accepted_at: datetime | None  # an operator accepted the day as it is (--min-share 0)

    @property
    def usual(self) -> int | None:
        return usual_volume(self.usual_weeks)

    @property
    def share(self) -> float | None:
        return self.events / self.usual if self.usual else None

    @property
    def thin(self) -> bool:
        return self.accepted_at is None and self.share is not None and self.share < self.min_share

    @property
    def complete(self) -> bool:
        return self.past_the_day and not self.thin


def completeness(conn: psycopg.Connection, day: date, grace: timedelta, min_share: float = DEFAULT_MIN_SHARE,
                 accept_as: Invocation | None = None) -> Completeness:
    """Is D complete? The consumer has moved past it (an event at or after D+1 00:00 UTC + grace), and D
    holds at least ``min_share`` of its usual events: the median of the same weekday over the four weeks
    before, from the counts aggregate recorded (skipped with fewer than two such weeks). ``accept_as``:
    record that an operator accepts D as it is (the ledger's check-complete row); later checks honour it."""
    start, end = day_bounds(day)
    newest = one_row(conn.execute(query("status.newest_event")))[0]
    events = one_row(conn.execute(query("status.day_volume"), {"start": start, "end": end}))[0]
    usual_weeks = _day_figures(conn, day, day)[0].usual_events
    if accept_as is not None:
        conn.execute(query("status.accept"), {
            "day": day, "trigger": accept_as.trigger, "airflow_run_id": accept_as.airflow_run_id, "events": events,
            "details": Jsonb({"events": events, "usual": usual_volume(usual_weeks), "weeks": len(usual_weeks)}),
            "host": socket.gethostname(), "pid": os.getpid(), "version": __version__})
    accepted_at = one_row(conn.execute(query("status.accepted"), {"day": day}))[0]
    threshold = end + grace
    return Completeness(day, newest is not None and newest >= threshold, newest, threshold, events,
                        list(usual_weeks), min_share, accepted_at)


def recent_runs(conn: psycopg.Connection, job: str | None = None, status: str | None = None,
                day: date | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The ledger's rows, newest first, as dicts in the query's column order (the `runs --json` shape)."""
    return conn.cursor(row_factory=dict_row).execute(
        query("status.recent_runs"), {"job": job, "status": status, "day": day, "limit": limit}).fetchall()
