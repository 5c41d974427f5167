"""
# pulsecart_daily_metrics

Every day at 03:00 UTC: compute the prior day's business metrics (orders placed, carts abandoned,
abandonment rate, revenue, invalid order totals) into `daily_metrics`:
`pulsecart metrics --date <prior day>`.
"""

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from pulsecart_common import CLI, DATABASE_ENV, PRIOR_DAY, default_args, rerun_help

with DAG(
    dag_id="pulsecart_daily_metrics",
    description="Compute prior day business metrics",
    schedule="0 3 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    default_args=default_args(retries=2, retry_delay=timedelta(minutes=5)),
    tags=["pulsecart", "metrics"],
    doc_md=__doc__ + rerun_help("pulsecart metrics --date 2025-03-03\n"
                                "pulsecart metrics --window 2025-03-01..2025-03-07 --only-failed"),
) as dag:
    BashOperator(
        task_id="compute_daily_metrics",
        bash_command=f"{CLI} metrics --date {PRIOR_DAY}",
        env=DATABASE_ENV,
        append_env=True,
        skip_on_exit_code=None,
    )
