"""
# pulsecart_daily_metrics

Every day at 03:00 UTC: wait until the prior day's events are complete (the consumer has moved
30 minutes past midnight, the same sensor as the aggregation's), then compute that day's business
metrics (orders placed, carts abandoned, abandonment rate, revenue, invalid order totals) into
`daily_metrics`: `pulsecart metrics --date <prior day>`. A partial day is never recorded as succeeded.

Then the schedule heals: `heal_metrics` reruns the days among the
last 30 (Airflow Variable `pulsecart_heal_days`) whose events changed after their run (late, deleted or
corrected events, dead letters republished by reconciliation) or whose latest run failed; missing days
are left to the operator. A day it cannot heal fails the task and is named in its failure email and in
`pulsecart status --check`. Backfill runs do not heal.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG
from pulsecart_alerts import alerts_help
from pulsecart_common import (
    PRIOR_DAY,
    cli_task,
    default_args,
    finished_by,
    heal_task,
    rerun_help,
    wait_for_complete_day,
)

with DAG(
    dag_id="pulsecart_daily_metrics",
    description="Compute prior day business metrics",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    default_args=default_args(retries=2, retry_delay=timedelta(minutes=5)),
    tags=["pulsecart", "metrics"],
    doc_md=__doc__ + rerun_help("pulsecart metrics --date 2025-03-03\n"
                                "pulsecart metrics --window 2025-03-01..2025-03-07 --only-failed")
    + alerts_help(late_after="07:00 UTC"),
) as dag:
    job = f"metrics --date {PRIOR_DAY}"
    (wait_for_complete_day(then=job) >> cli_task("compute_daily_metrics", job, execution_timeout=timedelta(minutes=30))
     >> heal_task("metrics", execution_timeout=timedelta(hours=1)))
    finished_by("metrics", hours_after_firing=4, by="07:00 UTC")
