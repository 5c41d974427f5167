"""`pulsecart prune`: score history older than a number of days goes, one as-of day per transaction."""

from dataclasses import dataclass
from datetime import date, timedelta

import psycopg

from pulsecart_cli.queries import one_row, query

DEFAULT_KEEP_DAYS = 400


@dataclass(frozen=True)
class Pruned:
    days: list[date]
    rows: int


def prune_history(conn: psycopg.Connection, keep_days: int, today: date) -> Pruned:
    """Remove the scores as of days before ``today - keep_days``: never the current scores, nor the day
    the oldest kept day's scores carry forward from. Counts stay, and the day's record says its scores
    were pruned, so `status` shows it stale and a rerun rebuilds it. Each day is a short transaction
    under the score step's lock: a running job waits for one day's delete at most."""
    cutoff = today - timedelta(days=keep_days)
    days = [row[0] for row in conn.execute(query("aggregate.prunable_days"), {"cutoff": cutoff})]
    rows = 0
    for day in days:
        with conn.transaction():
            conn.execute(query("aggregate.begin_day"))
            conn.execute(query("aggregate.lock_scores"))
            rows += one_row(conn.execute(query("aggregate.prune_day"), {"day": day}))[0]
    return Pruned(days, rows)
