"""Which days a run processes: the days asked for, or those the backfill selectors pick (missing,
failed, stale), and whether `--if-missing` finds the day already done."""

from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg.rows import class_row

from pulsecart_cli.ledger import RunStatus
from pulsecart_cli.queries import query
from pulsecart_cli.status import DayState, day_states


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
    chosen: dict[date, str] = {}
    for day, state in sorted(day_states(conn, job, days).items()):
        if selection.only_missing and not state.ever_succeeded and state.state != DayState.BEFORE_EVENTS:
            chosen[day] = "missing" if state.latest_status is None else f"missing (latest {state.latest_status})"
        elif selection.only_failed and state.latest_status == RunStatus.FAILED:
            chosen[day] = "failed"
        elif selection.stale and state.ever_succeeded and state.stale_itself:
            chosen[day] = f"stale: {state.stale_reason}"
        if selection.stale and state.ever_succeeded:
            # Stale through an earlier day it reads (its events changed, it never ran, its latest run failed):
            # running that day (even before the window) refreshes this one in the same run; rerunning this
            # one would not.
            for earlier, why in state.stale_inputs:
                chosen.setdefault(earlier, f"read by {day}: {why}")
    return sorted(chosen.items())


def plan_days(conn: psycopg.Connection | None, job: str, days: list[date],
              selection: Selection) -> list[tuple[date, str]]:
    """The days a run would process, oldest first, each with the reason it was chosen. Without a
    selector every day asked for, and no database (``conn`` may be None)."""
    if not selection.filtering:
        return [(day, "requested") for day in sorted(days)]
    if conn is None:
        raise ValueError("the selectors read the ledger: plan_days needs a connection")
    return choose_days(conn, job, days, selection)


@dataclass(frozen=True)
class LastSuccess:
    """The latest successful run of a job for a day (``status.last_success``)."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    trigger: str


def last_success(conn: psycopg.Connection, job: str, day: date) -> LastSuccess | None:
    return conn.cursor(row_factory=class_row(LastSuccess)).execute(
        query("status.last_success"), {"job": job, "day": day}).fetchone()
