"""A test-only Airflow cluster policy (Airflow imports `airflow_local_settings` from sys.path): the
tests that put this folder on PYTHONPATH retry a failed task after PULSECART_TEST_RETRY_DELAY seconds
(default 0) instead of the DAGs' production delay of minutes. Nothing else changes."""

import os
from datetime import timedelta


def task_policy(task) -> None:
    task.retry_delay = timedelta(seconds=float(os.environ.get("PULSECART_TEST_RETRY_DELAY", "0")))
