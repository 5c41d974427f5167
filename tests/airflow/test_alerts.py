"""Failure alerts through real Airflow (`airflow dags test`) into a real SMTP server: one email when a
task has failed for good, none for a try that is retried and then succeeds, none without recipients.

Retries wait 0 s here instead of minutes: a test-only cluster policy (tests/airflow/retry_policy), the
DAGs themselves are unchanged."""

import sqlite3
import subprocess
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from pulsecart_cli import units
from pulsecart_cli.seed import SeedSpec, seed_events
from tests.helpers import AIRFLOW, airflow_uri, body, connect, insert_events, run_pulsecart, utc

UNREACHABLE = "postgresql://nobody:topsecret@127.0.0.1:1/none"
RETRY_POLICY = str(Path(__file__).parent / "retry_policy")

pytestmark = pytest.mark.slow  # each runs `airflow dags test` through a real SMTP server: about a minute


def alerting(smtp_sink, recipients="ops@pulsecart.test, oncall@pulsecart.test", **extra) -> dict:
    env = {"AIRFLOW_CONN_SMTP_DEFAULT": smtp_sink.connection_uri, "PYTHONPATH": RETRY_POLICY} | extra
    if recipients is not None:
        env["AIRFLOW_VAR_PULSECART_ALERT_EMAILS"] = recipients
    return env


def fields(message) -> dict:
    return {name.strip(): value.strip() for name, _, value in
            (line.partition(":") for line in body(message).splitlines()) if value}


def test_a_job_failing_on_its_last_try_sends_one_email(airflow, smtp_sink):
    result = airflow("dags", "test", "pulsecart_daily_metrics", "2025-04-02",
                     "--mark-success-pattern", "wait_for_prior_day_events",
                     extra_env=alerting(smtp_sink, AIRFLOW_CONN_PULSECART_DB=UNREACHABLE))
    output = result.stdout + result.stderr
    assert output.count("new_state=up_for_retry") == 2, output[-3000:]    # tries 1 and 2 are retried
    assert "new_state=failed" in output

    assert len(smtp_sink.messages) == 1, [m["Subject"] for m in smtp_sink.messages]
    message = smtp_sink.messages[0]
    assert message["X-Envelope-To"] == "ops@pulsecart.test, oncall@pulsecart.test"
    assert message["From"] == "airflow@pulsecart.test"
    assert message["Subject"] == ("[pulsecart] FAILED pulsecart_daily_metrics.compute_daily_metrics"
                                  " for 2025-04-01 (try 3 of 3)")
    sent = fields(message)
    assert sent["DAG"] == "pulsecart_daily_metrics"
    assert sent["Task"] == "compute_daily_metrics"
    assert sent["Day"] == "2025-04-01"
    assert sent["Try"] == "3 of 3"
    assert sent["pulsecart"].startswith(
        "Error: cannot connect to the database at postgres://nobody:***@127.0.0.1:1/none: connection failed:")
    assert sent["Rerun by hand"] == "pulsecart metrics --date 2025-04-01"
    assert "topsecret" not in message.as_string()


def test_a_sensor_that_cannot_reach_the_database_fails_at_once_with_one_email(airflow, smtp_sink):
    result = airflow("dags", "test", "pulsecart_nightly_aggregation", "2025-04-02",
                     extra_env=alerting(smtp_sink, AIRFLOW_CONN_PULSECART_DB=UNREACHABLE))
    assert "new_state=up_for_retry" not in result.stdout + result.stderr

    assert len(smtp_sink.messages) == 1, [m["Subject"] for m in smtp_sink.messages]
    sent = fields(smtp_sink.messages[0])
    assert smtp_sink.messages[0]["Subject"] == ("[pulsecart] FAILED pulsecart_nightly_aggregation.wait_for_prior_day_events"
                                                " for 2025-04-01 (try 1 of 3, failed without retry)")
    assert (sent["Task"], sent["Day"], sent["Try"]) == (
        "wait_for_prior_day_events", "2025-04-01", "1 of 3 (failed without retry)")
    assert sent["pulsecart"].startswith("Error: cannot connect to the database at postgres://nobody:***@")
    assert sent["Rerun by hand"] == ("pulsecart check-complete --date 2025-04-01 --grace 30m --min-share 0.3"
                                     " && pulsecart aggregate --date 2025-04-01")


def test_no_recipients_variable_no_email(airflow, smtp_sink):
    result = airflow("dags", "test", "pulsecart_nightly_aggregation", "2025-04-02",
                     extra_env=alerting(smtp_sink, recipients=None, AIRFLOW_CONN_PULSECART_DB=UNREACHABLE))
    assert "pulsecart_alert_emails is not set: no failure email" in result.stdout + result.stderr
    assert smtp_sink.messages == []


def test_a_job_that_succeeds_on_retry_sends_no_email(airflow, airflow_home, conn, db_url, smtp_sink):
    """Try 1 finds the day locked by another session (exit 3); the lock goes; try 2 succeeds."""
    insert_events(conn, [("a", "order.placed", utc(2025, 4, 1, 12), {"total": 3.0}),
                         ("b", "product.viewed", utc(2025, 4, 2, 0, 45))])
    metadata = Path(airflow_home["AIRFLOW_HOME"]) / "airflow.db"
    holder = connect(db_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%(job_key)s, %(unit_key)s)",
                   units.lock_keys("metrics", date(2025, 4, 1), None))
    retried = threading.Event()

    def release_after_the_first_try():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not retried.is_set():
            with sqlite3.connect(f"file:{metadata}?mode=ro", uri=True, timeout=10) as db:
                state = db.execute(
                    "SELECT ti.state FROM task_instance ti JOIN dag_run r ON (r.dag_id, r.run_id) = (ti.dag_id, ti.run_id)"
                    " WHERE ti.dag_id = 'pulsecart_daily_metrics' AND ti.task_id = 'compute_daily_metrics'"
                    " AND r.logical_date LIKE '2025-04-02%'").fetchone()
            if state and state[0] == "up_for_retry":
                retried.set()
            time.sleep(0.2)
        holder.close()

    releaser = threading.Thread(target=release_after_the_first_try)
    releaser.start()
    try:
        result = airflow("dags", "test", "pulsecart_daily_metrics", "2025-04-02",
                         extra_env=alerting(smtp_sink, PULSECART_TEST_RETRY_DELAY="3"))
    finally:
        retried.set()
        releaser.join()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "is locked by another session" in output
    assert output.count("new_state=up_for_retry") == 1, output[-3000:]
    assert conn.execute("SELECT job, run_date, status FROM job_runs").fetchall() == [
        ("metrics", date(2025, 4, 1), "succeeded")]
    assert smtp_sink.messages == []


def thin_tuesday(cli_env: dict, conn, kept_share: float) -> None:
    """Four weeks of 1,000 events a day aggregated up to Monday 2025-03-03; Tuesday keeps ``kept_share``."""
    from tests.db.test_completeness import weeks_then_a_thin_tuesday

    weeks_then_a_thin_tuesday(conn, kept_share)
    assert run_pulsecart("aggregate", "--window", "2025-02-01..2025-03-03", env=cli_env).returncode == 0


def test_a_sensor_timing_out_on_a_thin_day_emails_why_and_how_to_accept_it(airflow, conn, db_url, smtp_sink):
    thin_tuesday({"PULSECART_DATABASE_URL": db_url}, conn, kept_share=0.22)
    left = conn.execute("SELECT count(*) FROM events WHERE \"timestamp\" >= '2025-03-04T00:00Z'"
                        " AND \"timestamp\" < '2025-03-05T00:00Z'").fetchone()[0]
    result = airflow("dags", "test", "pulsecart_nightly_aggregation", "2025-03-05",
                     extra_env=alerting(smtp_sink, PULSECART_TEST_SENSOR_TIMEOUT="4"))
    output = result.stdout + result.stderr
    assert "AirflowSensorTimeout" in output, output[-3000:]
    assert len(smtp_sink.messages) == 1, [m["Subject"] for m in smtp_sink.messages]
    assert smtp_sink.messages[0]["Subject"] == ("[pulsecart] FAILED pulsecart_nightly_aggregation."
                                                "wait_for_prior_day_events for 2025-03-04 (try 1 of 3, failed without retry)")
    sent = fields(smtp_sink.messages[0])
    assert sent["pulsecart"] == (
        f"2025-03-04 has {left / 1000:.0%} of its usual events (median of 4 Tuesdays: 1,000): waiting for the rest; "
        "to accept it as it is: pulsecart check-complete --date 2025-03-04 --min-share 0")
    assert sent["Airflow"].startswith("AirflowSensorTimeout: ") and "Last check" not in sent["Airflow"]
    assert conn.execute("SELECT count(*) FROM job_runs WHERE job = 'aggregate' AND run_date = '2025-03-04'"
                        ).fetchone()[0] == 0                          # the day was never run on half its events


def test_the_sensor_holds_a_thin_day_and_the_job_runs_once_its_events_arrive(airflow_home, conn, db_url, smtp_sink):
    thin_tuesday({"PULSECART_DATABASE_URL": db_url}, conn, kept_share=0.22)
    env = airflow_home | {"AIRFLOW_CONN_PULSECART_DB": airflow_uri(db_url)} | alerting(
        smtp_sink, PULSECART_TEST_SENSOR_TIMEOUT="240")
    dag_test = subprocess.Popen([AIRFLOW, "dags", "test", "pulsecart_nightly_aggregation", "2025-03-05"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(20)                                               # the sensor pokes, the day is thin: it waits
        assert dag_test.poll() is None
        assert conn.execute("SELECT count(*) FROM job_runs WHERE run_date = '2025-03-04'").fetchone()[0] == 0
        seed_events(conn, SeedSpec(date(2025, 3, 4), 1, 200, 1_000, 4))    # the producer catches up
        output, _ = dag_test.communicate(timeout=240)
    finally:
        dag_test.kill()
    assert dag_test.returncode == 0, output[-3000:]
    assert output.count("Return code matches retry code, will retry later") >= 2, output[-3000:]
    assert conn.execute("SELECT status, trigger FROM job_runs WHERE job = 'aggregate' AND run_date = '2025-03-04'"
                        ).fetchall() == [("succeeded", "airflow")]
    assert smtp_sink.messages == []
