"""On one real Airflow 3 deployment (dag-processor, scheduler with LocalExecutor, api-server; metadata on
PostgreSQL; a real SMTP server), every usual form of `pulsecart_db` runs the metrics DAG, and a secrets
backend supplies `pulsecart_db`, `smtp_default` and `pulsecart_alert_emails`.

1. Each form of tests/airflow/test_connection_forms.py goes into the metadata database as an operator puts it
   there (`airflow connections add pulsecart_db --conn-uri …` or `--conn-json …`); the scheduler then
   runs one triggered `pulsecart_daily_metrics` run for a day of its own, which must succeed on its first
   tries and leave one succeeded `metrics` row for that day in pulsecart's ledger, recorded by that run.
2. Airflow's LocalFilesystemBackend (`[secrets] backend`, set on every component from the start) holds
   `smtp_default` and the Variable `pulsecart_alert_emails` all along, and `pulsecart_db` in the second
   phase, when it is in neither the metadata database nor the environment: one run succeeds through it,
   and one whose metrics task fails (a trigger rejects that day's row) sends its one failure email after
   its last try, to the backend's recipient through the backend's SMTP connection. The first unpause's
   scheduled run sends its lateness email the same way when its deadline (07:00 UTC) has passed.
3. Then `smtp_default` and `pulsecart_alert_emails` only in the scheduler's environment
   (`AIRFLOW_CONN_SMTP_DEFAULT`, `AIRFLOW_VAR_PULSECART_ALERT_EMAILS`; the scheduler restarted): a run
   that fails for good sends its one failure email to that recipient, and the nightly aggregation,
   unpaused then, sends its first scheduled run's lateness email there once 06:00 UTC has passed.

Retries wait 0 s (the test-only cluster policy in tests/airflow/retry_policy is on the components'
PYTHONPATH); nothing else differs from the deploy steps in docs/operations.md.
"""

import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from psycopg import sql

from tests.airflow.test_connection_forms import PASSWORD, forms
from tests.airflow.test_scheduler_backfill import (
    PULSECART,
    Deployment,
    deployment_env,
    pulsecart,
    running,
    stop,
    wait_until_serving,
)
from tests.helpers import body, connect, fail_metrics_on

pytestmark = pytest.mark.slow

DAG_ID = "pulsecart_daily_metrics"
AGGREGATION_DAG_ID = "pulsecart_nightly_aggregation"
FIRST = date(2025, 3, 3)          # the first form's day; each form, then the backend's runs, a day later
RETRY_POLICY = Path(__file__).parent / "retry_policy"
RECIPIENT = "backend-ops@pulsecart.test"   # only the secrets backend knows it
ENVIRONMENT_RECIPIENT = "environment-ops@pulsecart.test"   # only the scheduler's environment knows it
BACKEND = "airflow.secrets.local_filesystem.LocalFilesystemBackend"
RUN_TIMEOUT = 300



class Secrets:
    """The files LocalFilesystemBackend reads at every lookup (no restart needed after a change)."""

    def __init__(self, folder: Path):
        folder.mkdir()
        self.connections_file, self.variables_file = folder / "connections.json", folder / "variables.json"
        self.connections: dict = {}
        self.variables: dict = {}

    def write(self) -> None:
        self.connections_file.write_text(json.dumps(self.connections, indent=2))
        self.variables_file.write_text(json.dumps(self.variables, indent=2))

    @property
    def kwargs(self) -> str:
        return json.dumps({"connections_file_path": str(self.connections_file),
                           "variables_file_path": str(self.variables_file)})


@pytest.fixture
def secrets(tmp_path, smtp_sink):
    backend = Secrets(tmp_path / "secrets")
    backend.connections = {"smtp_default": smtp_sink.connection_uri}
    backend.variables = {"pulsecart_alert_emails": RECIPIENT}
    backend.write()
    return backend


@pytest.fixture
def deployment(tmp_path, new_database, secrets):
    """test_scheduler_backfill's deployment, with the secrets backend configured on every component and
    nothing of pulsecart's in the metadata database but the Variable pulsecart_cli."""
    metadata = new_database(migrated=False)
    env = deployment_env(tmp_path, metadata) | {
        # The secrets backend, as an operator configures it ([secrets] backend / backend_kwargs).
        "AIRFLOW__SECRETS__BACKEND": BACKEND,
        "AIRFLOW__SECRETS__BACKEND_KWARGS": secrets.kwargs,
        # Retries after 0 s instead of 5 minutes (test-only cluster policy).
        "PYTHONPATH": os.pathsep.join(filter(None, [str(RETRY_POLICY), os.environ.get("PYTHONPATH")])),
        "PULSECART_TEST_RETRY_DELAY": "0",
    }
    with running(Deployment(tmp_path, env, metadata), ("variables", "set", "pulsecart_cli", PULSECART)) as deployed:
        yield deployed


def trigger(deployed: Deployment, day: date, label: str) -> str:
    """A manual run that processes ``day`` (its logical date is the next day's 03:00, as scheduled)."""
    run_id = f"{label}__{day}"
    deployed.airflow("dags", "trigger", DAG_ID, "--run-id", run_id,
                     "--logical-date", f"{day + timedelta(days=1)}T03:00:00+00:00")
    return run_id


def run_state(deployed: Deployment, run_id: str) -> str | None:
    rows = deployed.query("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id))
    return rows[0][0] if rows else None


def wait_for_end(deployed: Deployment, run_id: str) -> str:
    return deployed.wait(f"the run {run_id} to end", lambda: (
        run_state(deployed, run_id) if run_state(deployed, run_id) in ("success", "failed") else None),
        RUN_TIMEOUT, interval=1)


def tasks(deployed: Deployment, run_id: str) -> dict:
    return {task: (state, tries) for task, state, tries in deployed.query(
        "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = %s AND run_id = %s",
        (DAG_ID, run_id))}


def run_logs(deployed: Deployment, run_id: str) -> str:
    """A run's task logs: the lines that say what went wrong, else each log's tail."""
    text = ""
    for path in sorted((deployed.home / "logs").rglob("*.log")):
        if run_id in str(path):
            lines = path.read_text(errors="replace").splitlines()
            errors = [line for line in lines if "Error" in line or '"level":"error"' in line]
            text += f"\n--- {path.relative_to(deployed.home)} ---\n" + "\n".join(errors or lines)[-1500:]
    return text[-8000:]


def ledger(db_url: str, day: date) -> list:
    with connect(db_url) as conn:
        return conn.execute("SELECT job, status, trigger, airflow_run_id FROM job_runs WHERE run_date = %s"
                            " ORDER BY id", (day,)).fetchall()


def due_lateness_emails(deployed: Deployment, dag_id: str = DAG_ID, by_hour: int = 7) -> list[str]:
    """An unpause's scheduled run of ``dag_id`` sends one lateness email once its deadline (fire time + 4 h,
    ``by_hour``:00 UTC) has passed: its day never completes here. Which depends on the time of day."""
    now = datetime.now(UTC)
    return [f"[pulsecart] LATE {dag_id} for {(logical_date - timedelta(days=1)).date()}: "
            f"not finished by {by_hour:02d}:00 UTC"
            for (logical_date,) in deployed.query(
                "SELECT logical_date FROM dag_run WHERE dag_id = %s AND run_type = 'scheduled'", (dag_id,))
            if logical_date + timedelta(hours=4) < now - timedelta(seconds=30)]


def test_every_connection_form_and_a_secrets_backend_on_a_real_scheduler(deployment, secrets, conn, db_url,
                                                                         smtp_sink):
    started = time.monotonic()
    form_values = forms(db_url)
    days = {name: FIRST + timedelta(days=n) for n, name in enumerate(form_values)}
    backend_day = FIRST + timedelta(days=len(form_values))
    failing_day = backend_day + timedelta(days=1)   # after backend_day: that run's healing never reaches it
    conn.execute(sql.SQL("DROP ROLE IF EXISTS pulsecart_pw"))
    conn.execute(sql.SQL("CREATE ROLE pulsecart_pw LOGIN SUPERUSER PASSWORD {}").format(sql.Literal(PASSWORD)))
    try:
        # Every day's events, and the next day's so that each day's check-complete passes at its first poke.
        pulsecart(db_url, "seed", "--start", str(FIRST), "--days", str((failing_day - FIRST).days + 3),
                  "--users", "50", "--events-per-day", "400", "--seed", "28")
        conn.execute(fail_metrics_on(str(failing_day), "fail_on_day"))
        _run(deployment, secrets, db_url, smtp_sink, form_values, days, backend_day, failing_day)
    finally:
        conn.execute("DROP OWNED BY pulsecart_pw")
        conn.execute("DROP ROLE pulsecart_pw")
    print(f"connection forms and secrets backend on a real scheduler: {time.monotonic() - started:.0f} s")


def _run(deployment, secrets, db_url, smtp_sink, form_values, days, backend_day, failing_day):
    wait_until_serving(deployment, [DAG_ID])
    deployment.airflow("dags", "unpause", "-y", "--treat-dag-id-as-regex", f"^{DAG_ID}$")

    # 1. Each form in the metadata database, as `airflow connections add` puts it there; one run each.
    failures = {}
    for n, (name, env) in enumerate(form_values.items()):
        value = env["AIRFLOW_CONN_PULSECART_DB"]
        if n:
            deployment.airflow("connections", "delete", "pulsecart_db")
        deployment.airflow("connections", "add", "pulsecart_db",
                           "--conn-json" if value.startswith("{") else "--conn-uri", value)
        run_id = trigger(deployment, days[name], f"form{n}")
        state = wait_for_end(deployment, run_id)
        retried = {task: tries for task, (_, tries) in tasks(deployment, run_id).items() if tries != 1}
        rows = ledger(db_url, days[name])
        if state != "success" or retried or rows != [("metrics", "succeeded", "airflow", run_id)]:
            failures[name] = f"{state}, retried {retried}, ledger {rows}{run_logs(deployment, run_id)}"
    assert not failures, "\n\n".join(f"{name}: {why}" for name, why in failures.items())
    logs = "".join(path.read_text(errors="replace") for path in deployment.home.rglob("*.log"))
    assert PASSWORD not in logs, "a task or component log shows pulsecart_pw's password"

    # 2. pulsecart_db (the JSON form, as a connections file holds it) only in the secrets backend.
    deployment.airflow("connections", "delete", "pulsecart_db")
    secrets.connections["pulsecart_db"] = json.loads(form_values["JSON form (extras not all strings)"]
                                                     ["AIRFLOW_CONN_PULSECART_DB"])
    secrets.write()
    assert deployment.query("SELECT conn_id FROM connection") == []
    assert deployment.query("SELECT key FROM variable") == [("pulsecart_cli",)]
    assert not [k for k in deployment.env if k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))]

    succeeding, failing = trigger(deployment, backend_day, "backend"), trigger(deployment, failing_day, "backend")
    assert wait_for_end(deployment, succeeding) == "success", run_logs(deployment, succeeding)
    assert ledger(db_url, backend_day) == [("metrics", "succeeded", "airflow", succeeding)]
    assert wait_for_end(deployment, failing) == "failed", run_logs(deployment, failing)
    ran = tasks(deployment, failing)
    assert ran["wait_for_prior_day_events"] == ("success", 1), ran   # the backend's connection reached pulsecart
    assert ran["compute_daily_metrics"] == ("failed", 3), ran
    assert ran["heal_metrics"][0] == "upstream_failed", ran
    assert ledger(db_url, failing_day) == [("metrics", "failed", "airflow", failing)] * 3

    failed_subject = f"[pulsecart] FAILED {DAG_ID}.compute_daily_metrics for {failing_day} (try 3 of 3)"
    expected = sorted([failed_subject, *due_lateness_emails(deployment)])
    deployment.wait("the alert emails", lambda: len(smtp_sink.messages) >= len(expected), 120, interval=1)
    time.sleep(3)   # an extra email (one per try, say) would arrive by now
    assert sorted(m["Subject"] for m in smtp_sink.messages) == expected, deployment.task_logs()
    for message in smtp_sink.messages:
        assert message["X-Envelope-To"] == RECIPIENT
        assert message["From"] == "airflow@pulsecart.test"
    failed = next(m for m in smtp_sink.messages if m["Subject"] == failed_subject)
    assert f"injected failure for {failing_day}" in body(failed), body(failed)
    assert f"Rerun by hand: pulsecart metrics --date {failing_day}\n" in body(failed) + "\n", body(failed)
    assert PASSWORD not in "".join(m.as_string() for m in smtp_sink.messages)
    print(f"emails through the secrets backend: {expected}")

    # 3. smtp_default and the recipients only in the environment of the scheduler (whose task processes
    # inherit it), no longer in the backend: a failing run's email still arrives, to that recipient.
    environment_day = failing_day + timedelta(days=1)
    with connect(db_url) as conn:
        conn.execute(fail_metrics_on(str(environment_day), "fail_on_environment_day"))
    del secrets.connections["smtp_default"], secrets.variables["pulsecart_alert_emails"]
    secrets.write()
    stop(deployment.processes["scheduler"])
    deployment.env |= {"AIRFLOW_CONN_SMTP_DEFAULT": smtp_sink.connection_uri,
                       "AIRFLOW_VAR_PULSECART_ALERT_EMAILS": ENVIRONMENT_RECIPIENT}
    deployment.start("scheduler")
    before = len(smtp_sink.messages)
    failing = trigger(deployment, environment_day, "environment")
    # The nightly aggregation, unpaused now: its first scheduled run is late once 06:00 UTC has passed.
    wait_until_serving(deployment, [AGGREGATION_DAG_ID])
    deployment.airflow("dags", "unpause", "-y", "--treat-dag-id-as-regex", f"^{AGGREGATION_DAG_ID}$")
    assert wait_for_end(deployment, failing) == "failed", run_logs(deployment, failing)
    deployment.wait("the aggregation's scheduled run", lambda: deployment.query(
        "SELECT 1 FROM dag_run WHERE dag_id = %s AND run_type = 'scheduled'", (AGGREGATION_DAG_ID,)), 120, interval=1)
    expected = sorted([f"[pulsecart] FAILED {DAG_ID}.compute_daily_metrics for {environment_day} (try 3 of 3)",
                       *due_lateness_emails(deployment, AGGREGATION_DAG_ID, by_hour=6)])
    deployment.wait("the alert emails", lambda: len(smtp_sink.messages) - before >= len(expected), 180, interval=1)
    time.sleep(3)
    sent = smtp_sink.messages[before:]
    assert sorted(m["Subject"] for m in sent) == expected, deployment.task_logs()
    assert {m["X-Envelope-To"] for m in sent} == {ENVIRONMENT_RECIPIENT}
    print(f"emails through the scheduler's environment: {expected}")
