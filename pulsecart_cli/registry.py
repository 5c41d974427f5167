"""The daily jobs, one declaration each. The CLI's commands and `--job` choices, the results table's
notes, the runner's choice between one day at a time and two days in flight, `status`'s staleness rules,
the Airflow DAGs (through ``dags/pulsecart_jobs.json``, which ``make dags`` generates from here:
pulsecart_cli/dag_spec.py) and the DAG tests' expectations all come from ``DAILY_JOBS``.

Adding a job: its SQL in ``sql/queries/<job>.sql``, its day function (``jobs.DayFunction``) in ``jobs.py``,
one ``DailyJob`` below, then ``make dags`` (see docs/development.md, "Adding a job").
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pulsecart_cli.jobs import (
    DayFunction,
    aggregate_day,
    forget_aggregate_day,
    forget_metrics_day,
    metrics_day,
)


def _details(details: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in details.items())


@dataclass(frozen=True)
class AfterTask:
    """A task of a job's DAG after its healing: `pulsecart <arguments>`, where ``{keep_days}`` and
    ``{prior_day}`` become the DAG's templates (the Airflow Variable `pulsecart_keep_days`, the day a run
    processes)."""

    task_id: str
    arguments: str
    execution_timeout: timedelta
    not_in_backfills: bool = False  # a backfill's run does nothing


@dataclass(frozen=True)
class JobDag:
    """What only a job's Airflow DAG needs (its id and schedule are the job's own fields). The DAG waits
    until the prior day's events are complete, runs `pulsecart <job> --date <prior day>` as ``task_id``,
    heals the last 30 days (`heal_<job>`), then runs ``after_healing`` in order; a scheduled run whose day
    is not done ``late_after_hours`` after it fires sends a lateness email. dags/pulsecart_daily_dags.py
    builds it from dags/pulsecart_jobs.json (``make dags``)."""

    task_id: str
    execution_timeout: timedelta
    description: str
    tags: tuple[str, ...]
    doc: str  # its doc_md, under a `# <dag_id>` heading and above the rerun and alerts sections
    rerun_examples: tuple[str, ...]  # the commands its doc shows under "Rerun by hand"
    late_after_hours: int = 4
    heal_timeout: timedelta = timedelta(hours=1)
    after_healing: tuple[AfterTask, ...] = ()


@dataclass(frozen=True)
class DailyJob:
    """A job that processes one UTC day at a time: `pulsecart <name> --date D` / `--window A..B`."""

    name: str
    run_day: DayFunction  # replaces the day's results inside the transaction its caller opened
    forget_day: DayFunction  # `pulsecart forget`: removes them, as if the job had never run for the day
    help: str  # the command's --help: what it does, then a verbatim `Examples:` block
    dag_id: str  # its Airflow DAG (dags/pulsecart_daily_dags.py), which runs `pulsecart <name> --date <prior day>`
    schedule: str  # the DAG's cron schedule (UTC): once a day at a fixed time, after the day it processes
    dag: JobDag  # the rest of its DAG
    # Its day function calls ``DayContext.wait_for_previous_day`` before the part that reads earlier
    # days' results: a window then keeps two days in flight on two connections, committing in order.
    # A job that does not call it runs a window one day at a time.
    overlapping: bool = False
    # Its result for D reads its own results for D-N .. D-1 (aggregate: the scores as of D read the counts of
    # the six days before): a day among them whose events arrived late, or that never ran or failed, leaves D
    # stale too, and `--stale` reruns that day, not D. So its day function, run for a day, must also refresh
    # the later days already computed that read it (as aggregate rescores D+1 .. D+6).
    reads_days_before: int = 0
    # Its day also keeps a result computed from its results of D-N .. D (aggregate's scores as of D, recorded
    # in aggregated_days): `status` calls the day stale when those results changed after it was computed
    # (``counts_version > scores_from``), or when `prune` removed it.
    scores_from_days_before: bool = False
    # Its figures (columns of status.day_figures) that make a day suspect when they move more than ±50 %
    # against the same weekday's usual; every job's day is also suspect when its events are thin.
    watched_figures: tuple[str, ...] = ()
    # A succeeded day's details as the notes of the results table (Rich markup; values are numbers).
    summary: Callable[[dict[str, Any]], str] = _details
    forgotten_summary: Callable[[dict[str, Any]], str] = _details  # the same for a day `forget` removed


def _aggregate_summary(d: dict[str, Any]) -> str:
    kept = " (kept: already computed from these counts)" if d["scores_kept"] else ""
    note = f"{d['scored_users']} users scored{kept}; current scores as of {d['current_scores_as_of']}"
    unaggregated = d.get("scores_read_unaggregated_days")
    if unaggregated:
        which = "which has events and was" if len(unaggregated) == 1 else "which have events and were"
        note += (f"; [yellow]its scores read {', '.join(unaggregated)}, {which} never aggregated: "
                 f"pulsecart aggregate --date {unaggregated[0]} fills it and rescores this day[/]")
    return note + _rescored(d)


def _aggregate_forgotten(d: dict[str, Any]) -> str:
    note = f"{d['counts_removed']} counts and {d['scores_removed']} scores removed{_rescored(d)}"
    return note + f"; current scores as of {d['current_scores_as_of'] or 'none (no day aggregated)'}"


def _rescored(d: dict[str, Any]) -> str:
    refreshed = d["scores_refreshed"]
    return f"; rescored as of {', '.join(refreshed)} (they read this day's counts)" if refreshed else ""


def _metrics_summary(d: dict[str, Any]) -> str:
    note = f"orders {d['orders_placed']}, revenue {d['revenue']}, abandonment {d['abandonment_rate'] or '-'}%"
    if d["invalid_order_totals"]:
        note += f", [yellow]{d['invalid_order_totals']} invalid order totals (left out of revenue)[/]"
    return note


def _metrics_forgotten(d: dict[str, Any]) -> str:
    return f"{d['metrics_removed']} daily_metrics row removed"


AGGREGATE = DailyJob(
    name="aggregate",
    run_day=aggregate_day,
    forget_day=forget_aggregate_day,
    help="""Aggregate a day's events into per-user counts and personalization scores.

    Replaces the day's event_aggregates and the scores as of that day exactly, and rescores the later
    as-of days that read its counts when they changed. With --via airflow, prints the `airflow backfill
    create` whose runs process exactly the days given (a run processes the day before it fires).

    \b
    Examples:
      pulsecart aggregate --date yesterday
      pulsecart aggregate --window 2025-03-01..2025-03-07 --only-missing
      pulsecart aggregate --window 2025-03-01..2025-03-07 --stale --dry-run
      pulsecart aggregate --window 2025-01-01..2025-03-31 --via airflow --max-active-runs 8
    """,
    dag_id="pulsecart_nightly_aggregation",
    schedule="0 2 * * *",
    dag=JobDag(
        task_id="aggregate_prior_day",
        execution_timeout=timedelta(hours=2),
        description="Aggregate prior day events into personalization scores",
        tags=("pulsecart", "personalization"),
        doc="""Every day at 02:00 UTC: wait until the prior day's events are complete (the consumer has moved
        30 minutes past midnight), then aggregate that day into `event_aggregates` and the score history
        (the current personalization scores are a view of the newest day): `pulsecart aggregate --date <prior day>`.

        Rerunning a day replaces its results exactly and rescores the later days that read its counts, so a
        backfill with any `--max-active-runs`, forwards or backwards, ends where a serial window ends.

        Then the schedule heals: `heal_aggregate` reruns the days among
        the last 30 (Airflow Variable `pulsecart_heal_days`) whose events changed after their run (late,
        deleted or corrected events, dead letters republished by reconciliation) or whose latest run failed,
        and the never-run days their scores read; missing days are left to the operator. A day it cannot heal
        fails the task and is named in its failure email and in `pulsecart status --check`. Backfill runs do not
        heal. Last, `prune_score_history` keeps the last 400 days of score history (`pulsecart_keep_days`).
        """,
        rerun_examples=("pulsecart aggregate --date 2025-03-03",
                        "pulsecart aggregate --window 2025-03-01..2025-03-07 --only-missing"),
        after_healing=(AfterTask("prune_score_history", "prune --keep-days {keep_days}", timedelta(hours=1),
                                 not_in_backfills=True),),
    ),
    overlapping=True,
    reads_days_before=6,
    scores_from_days_before=True,
    summary=_aggregate_summary,
    forgotten_summary=_aggregate_forgotten,
)

METRICS = DailyJob(
    name="metrics",
    run_day=metrics_day,
    forget_day=forget_metrics_day,
    help="""Compute a day's business metrics (orders, abandonment rate, revenue) into daily_metrics.

    With --via airflow, prints the `airflow backfill create` whose runs process exactly the days given.

    \b
    Examples:
      pulsecart metrics --date yesterday --if-missing --trigger cron
      pulsecart metrics --window 2025-03-01..2025-03-07 --only-failed --keep-going
      pulsecart metrics --window 2025-03-01..2025-03-07 --via airflow --run
    """,
    dag_id="pulsecart_daily_metrics",
    schedule="0 3 * * *",
    dag=JobDag(
        task_id="compute_daily_metrics",
        execution_timeout=timedelta(minutes=30),
        description="Compute prior day business metrics",
        tags=("pulsecart", "metrics"),
        doc="""Every day at 03:00 UTC: wait until the prior day's events are complete (the consumer has moved
        30 minutes past midnight, the same sensor as the aggregation's), then compute that day's business
        metrics (orders placed, carts abandoned, abandonment rate, revenue, invalid order totals) into
        `daily_metrics`: `pulsecart metrics --date <prior day>`. A partial day is never recorded as succeeded.

        Then the schedule heals: `heal_metrics` reruns the days among the
        last 30 (Airflow Variable `pulsecart_heal_days`) whose events changed after their run (late, deleted or
        corrected events, dead letters republished by reconciliation) or whose latest run failed; missing days
        are left to the operator. A day it cannot heal fails the task and is named in its failure email and in
        `pulsecart status --check`. Backfill runs do not heal.
        """,
        rerun_examples=("pulsecart metrics --date 2025-03-03",
                        "pulsecart metrics --window 2025-03-01..2025-03-07 --only-failed"),
    ),
    watched_figures=("orders", "revenue"),
    summary=_metrics_summary,
    forgotten_summary=_metrics_forgotten,
)

DAILY_JOBS: dict[str, DailyJob] = {job.name: job for job in (AGGREGATE, METRICS)}
