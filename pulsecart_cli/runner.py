"""Runs a per-day job over a list of days: each day under its lock, in its own transaction, in the ledger."""

from collections.abc import Callable, Iterable
from datetime import date

from pulsecart_cli import pubsub
from pulsecart_cli.database import connection
from pulsecart_cli.jobs import DAILY_JOBS
from pulsecart_cli.ledger import Invocation, UnitResult, run_unit
from pulsecart_cli.migrations import require_current
from pulsecart_cli.reconcile import Options, check_subscription, reconcile_topic


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


def run_reconcile(
    url: str,
    pairs: list[pubsub.TopicPair],
    project: str,
    options: Options,
    invocation: Invocation,
    *,
    wait: bool = False,
) -> list[UnitResult]:
    """Reconcile each topic's dead letters under its lock, one ledger row per topic."""
    clients = pubsub.connect(project)
    results = []
    with connection(url) as conn:
        require_current(conn)
        for pair in pairs:
            check_subscription(clients, pair)
        for pair in pairs:
            results.append(run_unit(
                conn, "reconcile", lambda c, pair=pair: reconcile_topic(clients, c, pair, options), invocation,
                target=pair.original, wait=wait, transactional=False))
    return results
