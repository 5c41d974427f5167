"""A test-only Airflow cluster policy (Airflow imports `airflow_local_settings` from sys.path): the
tests that put this folder on PYTHONPATH retry a failed task after PULSECART_TEST_RETRY_DELAY seconds
(default 0) instead of the DAGs' production delay of minutes. With PULSECART_TEST_SENSOR_TIMEOUT, the
sensor that waits for a complete day pokes every second (in poke mode, as `airflow dags test` runs it)
and times out after that many seconds instead of 6 hours. Nothing else changes."""

import os
from datetime import timedelta


def task_policy(task) -> None:
    task.retry_delay = timedelta(seconds=float(os.environ.get("PULSECART_TEST_RETRY_DELAY", "0")))
    timeout = os.environ.get("PULSECART_TEST_SENSOR_TIMEOUT")
    if timeout and task.task_id == "wait_for_prior_day_events":
        task.timeout, task.poke_interval, task.mode = float(timeout), 1.0, "poke"
