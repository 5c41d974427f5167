"""Runs a per-day job over a list of days: each day under its lock, in its own transaction, in the ledger."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from pulsecart_cli import pubsub
from pulsecart_cli.database import connection
from pulsecart_cli.jobs import DAILY_JOBS
from pulsecart_cli.ledger import Invocation, UnitResult, run_unit
from pulsecart_cli.migrations import require_current
from pulsecart_cli.reconcile import Options, check_subscription, reconcile_topic
from pulsecart_cli.status import Selection, choose_days, last_success


def plan_daily_job(url: str, job: str, days: list[date], selection: Selection) -> list[tuple[date, str]]:
    """The days a run would process, oldest first, each with the reason it was chosen."""
    if not selection.filtering:
        return [(day, "requested") for day in sorted(days)]
    with connection(url) as conn:
        require_current(conn)
        return choose_days(conn, job, days, selection)


def already_succeeded(url: str, job: str, day: date) -> tuple | None:
    """The latest successful run of ``job`` for ``day``, if any: (id, started_at, finished_at, trigger)."""
    with connection(url) as conn:
        require_current(conn)
        return last_success(conn, job, day)


@dataclass
class DailyRun:
    results: list[UnitResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.status == "succeeded" for r in self.results)


def run_daily_job(
    url: str,
    job: str,
    days: Iterable[date],
    invocation: Invocation,
    *,
    wait: bool = False,
    keep_going: bool = False,
    on_day_start: Callable[[date], None] = lambda day: None,
    on_day_done: Callable[[UnitResult], None] = lambda result: None,
) -> DailyRun:
    """Run ``job`` for each day, oldest first, so that scores as of D see D-6 .. D already done.
    Stops at the first failed day unless ``keep_going``, and at Ctrl-C (the current day rolled back)."""
    day_job = DAILY_JOBS[job]
    run = DailyRun()
    with connection(url) as conn:
        require_current(conn)
        for day in sorted(days):
            on_day_start(day)
            result = run_unit(conn, job, lambda c, day=day: day_job(c, day), invocation, run_date=day, wait=wait)
            run.results.append(result)
            on_day_done(result)
            if result.interrupted:
                run.interrupted = True
                break
            if result.status == "failed" and not keep_going:
                break
    return run


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
