"""Runs a per-day job over a list of days: each day under its lock, in its own transaction, in the ledger."""

from collections.abc import Callable, Iterable
from datetime import date

from pulsecart_cli.database import connection
from pulsecart_cli.jobs import DAILY_JOBS
from pulsecart_cli.ledger import Invocation, UnitResult, run_unit
from pulsecart_cli.migrations import require_current


def run_daily_job(
    url: str,
    job: str,
    days: Iterable[date],
    invocation: Invocation,
    *,
    wait: bool = False,
    keep_going: bool = False,
    on_day_done: Callable[[UnitResult], None] = lambda result: None,
) -> list[UnitResult]:
    """Run ``job`` for each day, oldest first. Stops at the first failed day unless ``keep_going``."""
    day_job = DAILY_JOBS[job]
    results = []
    with connection(url) as conn:
        require_current(conn)
        for day in sorted(days):
            result = run_unit(conn, job, lambda c, day=day: day_job(c, day), invocation, run_date=day, wait=wait)
            results.append(result)
            on_day_done(result)
            if result.status == "failed" and not keep_going:
                break
    return results
