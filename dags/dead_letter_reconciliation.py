"""
# pulsecart_dead_letter_reconciliation

Every 6 hours, one task per topic, in parallel: drain `<topic>.dead-letter`, republish what can be
processed to the original topic and quarantine the rest: `pulsecart reconcile --topic <topic>`.
Review the quarantine with `pulsecart quarantine list`.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG
from pulsecart_alerts import alerts_help
from pulsecart_common import PROJECT_FLAG, cli_task, default_args, rerun_help

TOPICS = ("commerce-events", "user-actions", "system-events")

with DAG(
    dag_id="pulsecart_dead_letter_reconciliation",
    description="Triage and reprocess dead-lettered Pub/Sub messages",
    schedule="0 */6 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    default_args=default_args(retries=1, retry_delay=timedelta(minutes=2)),
    tags=["pulsecart", "reliability"],
    doc_md=__doc__ + rerun_help("pulsecart reconcile --topic commerce-events --dry-run\n"
                                "pulsecart reconcile --topic all")
    + alerts_help(),
) as dag:
    for topic in TOPICS:
        cli_task(f"reconcile_{topic.replace('-', '_')}", f"reconcile --topic {topic}{PROJECT_FLAG}",
                 execution_timeout=timedelta(hours=1))
