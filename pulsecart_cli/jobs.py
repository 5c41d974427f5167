"""The per-day jobs. Each runs inside a transaction its caller opened and returns what it wrote."""

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import psycopg

from pulsecart_cli.dates import day_bounds
from pulsecart_cli.ledger import Outcome
from pulsecart_cli.queries import query


def aggregate_day(conn: psycopg.Connection, day: date,
                  wait_for_previous_day: Callable[[], int | None] = lambda: None) -> Outcome:
    """Replace D's event_aggregates and scores as of D; move the current scores forward when D is newest.

    D's counts need nothing else; its scores read D-6 .. D-1. In a window the runner passes
    ``wait_for_previous_day``, which returns once D-1 has committed, so D's counts overlap D-1's scores.
    It returns the ledger id of D-1's run when this window computed D-1: D's scores are then carried
    forward from D-1's (+ D, - D-7), half the work of grouping seven days, unless another process has
    replaced one of those days since."""
    start, end = day_bounds(day)
    params = {"day": day, "start": start, "end": end}
    conn.execute(query("aggregate.set_work_mem"))
    aggregate_rows, *counts_written = conn.execute(query("aggregate.replace_counts"), params).fetchone()
    previous_run = wait_for_previous_day()
    from_previous = previous_run is not None and conn.execute(
        query("aggregate.previous_scores_hold"), params | {"previous_run": previous_run}).fetchone()[0]
    scored_users, *history_written = conn.execute(
        query("aggregate.replace_history"), params | {"from_previous": from_previous}).fetchone()
    current_as_of = conn.execute(query("aggregate.lock_current_as_of")).fetchone()[0]
    advances = current_as_of is None or day >= current_as_of
    if advances:
        conn.execute(query("aggregate.replace_current"), params)
        conn.execute(query("aggregate.set_current_as_of"), params)
    return Outcome(
        rows=aggregate_rows,
        details={"aggregate_rows": aggregate_rows, "scored_users": scored_users, "current_scores_updated": advances,
                 "aggregates_written": sum(counts_written), "history_written": sum(history_written),
                 "scores_from_previous_day": from_previous},
    )


def metrics_day(conn: psycopg.Connection, day: date) -> Outcome:
    """Replace D's daily_metrics row."""
    start, end = day_bounds(day)
    orders, abandoned, rate, revenue, invalid = conn.execute(
        query("metrics.replace_day"), {"day": day, "start": start, "end": end}
    ).fetchone()
    return Outcome(
        rows=1,
        details={
            "orders_placed": orders,
            "carts_abandoned": abandoned,
            "abandonment_rate": _plain(rate),
            "revenue": _plain(revenue),
            "invalid_order_totals": invalid,
        },
    )


def _plain(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


DAILY_JOBS = {"aggregate": aggregate_day, "metrics": metrics_day}
# Jobs that accept ``wait_for_previous_day``: a window runs two of their days at once, committing in order.
OVERLAPPING_JOBS = {"aggregate"}
