"""The per-day jobs. Each runs inside a transaction its caller opened and returns what it wrote."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Protocol

import psycopg

from pulsecart_cli.dates import day_bounds
from pulsecart_cli.ledger import RunStatus, WorkOutput
from pulsecart_cli.queries import one_row, query


@dataclass(frozen=True)
class DayContext:
    """What the runner tells one day's work about the run around it."""

    later_days: frozenset[date] = frozenset()  # days among D+1 .. D+6 this run will process after this one
    # Returns once the run's previous day has committed (a window keeps two days in flight).
    wait_for_previous_day: Callable[[], None] = lambda: None
    notify: Callable[[str], None] = lambda message: None  # a note for the operator, now
    writers_open: bool = False  # a transaction writing events stayed open: the day notes a possible change


SCORES_LOCK_NOTE_AFTER_S = 1.0
# In a success's ledger details: the day's event change count in the snapshot that read its events. A
# higher count now means the events changed after the run (status.day_states).
EVENT_CHANGES_SEEN = "event_changes_seen"


def aggregate_day(conn: psycopg.Connection, day: date, context: DayContext = DayContext()) -> WorkOutput:
    """Replace D's event_aggregates and the scores as of D, and rescore the as-of days D+1 .. D+6 that
    read D's counts when they changed.

    Counts of different days are written in parallel. The score step then takes one lock for all runs
    (held until commit), so it sees every count committed before it: whatever the order or parallelism
    of runs, the last one to change a day's counts rescored every as-of day that reads them. Scores are
    carried forward from the day before (+ D, - D-7) whenever those are fresh: half the work of
    grouping seven days; D's own are kept when already computed from these counts (a rerun on
    unchanged data). ``personalization_scores`` is a view of the newest aggregated day's scores."""
    start, end = day_bounds(day)
    params = {"day": day, "start": start, "end": end}
    conn.execute(query("aggregate.begin_day"))
    aggregate_rows, *counts_written, changes_seen, events = one_row(
        conn.execute(query("aggregate.replace_counts"), params))
    context.wait_for_previous_day()
    _lock_scores(conn, day, context.notify)
    conn.execute(query("aggregate.record_counts"), params | {"counts_changed": any(counts_written), "events": events})
    scores_kept = _scores_fresh(conn, day)  # computed from these very counts: recomputing writes nothing
    if scores_kept:
        from_previous, history_written = False, 0
        scored_users = one_row(conn.execute(query("aggregate.scored_users"), params))[0]
    else:
        scored_users, from_previous, history_written = _score(conn, day)
    refreshed, rescored_rows = _rescore_later_days(conn, day, context)
    history_written += rescored_rows
    unaggregated = [str(row[0]) for row in conn.execute(query("aggregate.unaggregated_inputs"), params)]
    current_as_of = one_row(conn.execute(query("aggregate.current_as_of")))[0]
    return WorkOutput(
        rows=aggregate_rows,
        details={"aggregate_rows": aggregate_rows, "scored_users": scored_users,
                 "aggregates_written": sum(counts_written), "history_written": history_written,
                 "scores_from_previous_day": from_previous, "scores_kept": scores_kept,
                 "scores_refreshed": [str(d) for d in refreshed],
                 "current_scores_as_of": str(current_as_of) if current_as_of else None,
                 "current_scores_updated": current_as_of is not None and (current_as_of == day or current_as_of in refreshed),
                 "scores_read_unaggregated_days": unaggregated,
                 EVENT_CHANGES_SEEN: changes_seen},
    )


def read_day(day_function: "DayFunction", conn: psycopg.Connection, day: date, context: DayContext) -> WorkOutput:
    """``day_function`` for ``day``, in the caller's transaction; then, when a transaction writing events stayed
    open (``context.writers_open``), the day counts as changed after this run: it may hold rows the run did
    not see. Every job's days, whatever its SQL."""
    output = day_function(conn, day, context)
    if context.writers_open:
        conn.execute(query("changes.note_writer_may_have_changed"), {"day": day})
    return output


def _lock_scores(conn: psycopg.Connection, day: date, notify: Callable[[str], None]) -> None:
    """The score step's lock; says so when another run's score step keeps it for more than a second."""
    deadline = time.monotonic() + SCORES_LOCK_NOTE_AFTER_S
    while not one_row(conn.execute(query("aggregate.try_lock_scores")))[0]:
        if time.monotonic() >= deadline:
            notify(f"aggregate {day}: waiting for another run's score step to commit "
                   "(scores read seven days' counts, so score steps run one at a time)")
            conn.execute(query("aggregate.lock_scores"))
            return
        time.sleep(0.05)


def _score(conn: psycopg.Connection, as_of: date) -> tuple[int, bool, int]:
    """Replace the scores as of ``as_of``, carried forward from the day before when those are fresh,
    and record what they were computed from. Returns (users scored, carried forward, rows written)."""
    from_previous = _scores_fresh(conn, as_of - timedelta(days=1))
    scored_users, *written = one_row(conn.execute(
        query("aggregate.replace_history"), {"day": as_of, "from_previous": from_previous}))
    conn.execute(query("aggregate.record_scores"), {"day": as_of})
    return scored_users, from_previous, sum(written)


def _rescore_later_days(conn: psycopg.Connection, day: date, context: DayContext) -> tuple[list[date], int]:
    """Rescore the aggregated as-of days D+1 .. D+6 whose scores are stale, except those this run does
    later. Returns (the days rescored, rows written)."""
    stale = [row[0] for row in conn.execute(
        query("aggregate.stale_later_days"), {"day": day, "left_to_run": sorted(context.later_days)})]
    return stale, sum(_score(conn, as_of)[2] for as_of in stale)


def _scores_fresh(conn: psycopg.Connection, as_of: date) -> bool:
    """Whether the stored scores as of ``as_of`` were computed from the counts as they are now."""
    row = conn.execute(query("aggregate.scores_fresh"), {"day": as_of}).fetchone()
    return bool(row and row[0])


def metrics_day(conn: psycopg.Connection, day: date, context: DayContext = DayContext()) -> WorkOutput:
    """Replace D's daily_metrics row."""
    start, end = day_bounds(day)
    orders, abandoned, rate, revenue, invalid, changes_seen = one_row(conn.execute(
        query("metrics.replace_day"), {"day": day, "start": start, "end": end}))
    return WorkOutput(
        rows=1,
        details={
            "orders_placed": orders,
            "carts_abandoned": abandoned,
            "abandonment_rate": _plain(rate),
            "revenue": _plain(revenue),
            "invalid_order_totals": invalid,
            EVENT_CHANGES_SEEN: changes_seen,
        },
    )


def forget_aggregate_day(conn: psycopg.Connection, day: date, context: DayContext = DayContext()) -> WorkOutput:
    """D as if never aggregated: its counts, its scores and its record go, and the aggregated as-of days
    D+1 .. D+6 that read its counts are rescored (except those this run forgets later). The current
    scores move back to the newest aggregated day that remains."""
    conn.execute(query("aggregate.begin_day"))
    _lock_scores(conn, day, context.notify)
    counts_removed, scores_removed = one_row(conn.execute(query("aggregate.forget_day"), {"day": day}))
    refreshed, history_written = _rescore_later_days(conn, day, context)
    current_as_of = one_row(conn.execute(query("aggregate.current_as_of")))[0]
    return WorkOutput(
        rows=counts_removed + scores_removed, status=RunStatus.FORGOTTEN,
        details={"counts_removed": counts_removed, "scores_removed": scores_removed,
                 "history_written": history_written, "scores_refreshed": [str(d) for d in refreshed],
                 "current_scores_as_of": str(current_as_of) if current_as_of else None})


def forget_metrics_day(conn: psycopg.Connection, day: date, context: DayContext = DayContext()) -> WorkOutput:
    """D's daily_metrics row removed."""
    removed = one_row(conn.execute(query("metrics.forget_day"), {"day": day}))[0]
    return WorkOutput(rows=removed, status=RunStatus.FORGOTTEN, details={"metrics_removed": removed})


def _plain(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class DayFunction(Protocol):
    """A job's work on one day (the registry's ``DailyJob.run_day`` and ``forget_day``)."""

    def __call__(self, conn: psycopg.Connection, day: date, context: DayContext = ...) -> WorkOutput: ...

