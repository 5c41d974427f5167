"""
# pulsecart_nightly_aggregation

Every day at 02:00 UTC: wait until the prior day's events are complete (the consumer has moved
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
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG
from pulsecart_alerts import alerts_help
from pulsecart_common import (
    KEEP_DAYS,
    PRIOR_DAY,
    cli_task,
    default_args,
    finished_by,
    heal_task,
    rerun_help,
    wait_for_complete_day,
)

with DAG(
    dag_id="pulsecart_nightly_aggregation",
    description="Aggregate prior day events into personalization scores",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    default_args=default_args(retries=2, retry_delay=timedelta(minutes=5)),
    tags=["pulsecart", "personalization"],
    doc_md=__doc__ + rerun_help("pulsecart aggregate --date 2025-03-03\n"
                                "pulsecart aggregate --window 2025-03-01..2025-03-07 --only-missing")
    + alerts_help(late_after="06:00 UTC"),
) as dag:
    job = f"aggregate --date {PRIOR_DAY}"
    (wait_for_complete_day(then=job) >> cli_task("aggregate_prior_day", job, execution_timeout=timedelta(hours=2))
     >> heal_task("aggregate", execution_timeout=timedelta(hours=1))
     >> cli_task("prune_score_history", f"prune --keep-days {KEEP_DAYS}", execution_timeout=timedelta(hours=1),
                 not_in_backfills=True))
    finished_by("aggregate", hours_after_firing=4, by="06:00 UTC")
