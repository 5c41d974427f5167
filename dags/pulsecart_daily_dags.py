"""The daily jobs' DAGs (`pulsecart_nightly_aggregation`, `pulsecart_daily_metrics`, …): one per entry of
`pulsecart_jobs.json`, which `make dags` generates from the job registry (pulsecart_cli/registry.py). This
file imports Airflow, never pulsecart: an Airflow component may have only the CLI.

Each DAG, on its cron schedule (UTC): wait until the prior day's events are complete, run
`pulsecart <job> --date <prior day>`, heal the last 30 days (`heal_<job>`), run the job's tasks after
healing (the aggregation's `prune_score_history`), and, in a scheduled run, send a lateness email when the
day is not done by its deadline. Each DAG's doc says what its job does.
"""

import json
from datetime import timedelta
from pathlib import Path

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

JOBS = Path(__file__).with_name("pulsecart_jobs.json")
# What a task's arguments in pulsecart_jobs.json may name: `prune --keep-days {keep_days}`.
PLACEHOLDERS = {"prior_day": PRIOR_DAY, "keep_days": KEEP_DAYS}


def daily_dag(job: dict) -> DAG:
    """A daily job's DAG from its entry in pulsecart_jobs.json (pulsecart_cli/dag_spec.py writes it)."""
    with DAG(
        dag_id=job["dag_id"],
        description=job["description"],
        schedule=job["schedule"],
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        default_args=default_args(retries=2, retry_delay=timedelta(minutes=5)),
        tags=job["tags"],
        doc_md=job["doc_md"] + rerun_help("\n".join(job["rerun_examples"]))
        + alerts_help(late_after=job["late_after"]),
    ) as dag:
        command = f"{job['job']} --date {PRIOR_DAY}"
        last = (wait_for_complete_day(then=command)
                >> cli_task(job["task_id"], command, execution_timeout=timedelta(seconds=job["execution_timeout_s"]))
                >> heal_task(job["job"], execution_timeout=timedelta(seconds=job["heal_timeout_s"])))
        for task in job["after_healing"]:
            last = last >> cli_task(task["task_id"], task["arguments"].format(**PLACEHOLDERS),
                                    execution_timeout=timedelta(seconds=task["execution_timeout_s"]),
                                    not_in_backfills=task["not_in_backfills"])
        finished_by(job["job"], hours_after_firing=job["late_after_hours"], by=job["late_after"])
    return dag


# Module globals, where Airflow looks for DAGs.
for _job in json.loads(JOBS.read_text())["daily_jobs"]:
    globals()[_job["dag_id"]] = daily_dag(_job)
