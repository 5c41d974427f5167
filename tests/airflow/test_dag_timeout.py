"""A task killed by its execution_timeout in real Airflow: pulsecart takes SIGTERM like Ctrl-C, so the
retry starts cleanly and the ledger tells the truth (one failed row, one succeeded)."""

import json
import shutil
import subprocess
from datetime import date

import pytest

from tests.helpers import AIRFLOW, DAGS, airflow_uri, insert_events, slow_the_first_time, utc

# The first attempt's statement sleeps far past the task's timeout; the retry runs at full speed.
SLOW_FIRST_ATTEMPT = slow_the_first_time("slow_first_attempt", 600, "INSERT ON event_aggregates FOR EACH STATEMENT",
                                         returns="NULL")


def with_short_timeout_and_retry_delay(folder):
    """The real DAGs, with the aggregation's 2 h timeout cut to 8 s and the daily DAGs' 5 min retry delay to 2 s."""
    shutil.copytree(DAGS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    jobs_file = folder / "pulsecart_jobs.json"
    jobs = json.loads(jobs_file.read_text())
    [aggregation] = [job for job in jobs["daily_jobs"] if job["dag_id"] == "pulsecart_nightly_aggregation"]
    assert aggregation["execution_timeout_s"] == 2 * 60 * 60
    aggregation["execution_timeout_s"] = 8
    jobs_file.write_text(json.dumps(jobs))
    path = folder / "pulsecart_daily_dags.py"
    text = path.read_text()
    old, new = "retry_delay=timedelta(minutes=5)", "retry_delay=timedelta(seconds=2)"
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


@pytest.fixture
def airflow_with_short_timeout(airflow_home, db_url, tmp_path):
    dags = tmp_path / "dags"
    with_short_timeout_and_retry_delay(dags)
    env = airflow_home | {"AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                          "AIRFLOW_CONN_PULSECART_DB": airflow_uri(db_url)}
    (tmp_path / "home").mkdir()

    def run(*args):
        return subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, check=False, timeout=300)

    for command in (["db", "migrate"], ["dags", "reserialize"]):
        result = run(*command)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run


def test_a_task_killed_by_its_timeout_is_retried_cleanly(airflow_with_short_timeout, conn):
    insert_events(conn, [
        ("alice", "order.placed", utc(2025, 3, 3, 12)),
        ("bob", "product.viewed", utc(2025, 3, 4, 1, 0)),    # the day is complete
    ])
    conn.execute(SLOW_FIRST_ATTEMPT)

    result = airflow_with_short_timeout("dags", "test", "pulsecart_nightly_aggregation", "2025-03-04")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "AirflowTaskTimeout" in output                       # the first attempt hit execution_timeout
    assert "Sending SIGTERM signal to process group" in output  # (Airflow stops reading its output there)
    assert "state=success" in output
    assert conn.execute("SELECT run_date, status, error, trigger FROM job_runs ORDER BY id").fetchall() == [
        (date(2025, 3, 3), "failed", "terminated by SIGTERM", "airflow"),
        (date(2025, 3, 3), "succeeded", None, "airflow")]
    assert conn.execute("SELECT user_id, event_count FROM event_aggregates").fetchall() == [("alice", 1)]
    assert conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                        " AND datname = current_database()").fetchone()[0] == 0
