"""A real Airflow 3 deployment: dag-processor, scheduler (LocalExecutor) and api-server as separate
processes, metadata on PostgreSQL, and `airflow backfill create --max-active-runs 3` over six days of
both daily DAGs. The result must be exactly what one serial `pulsecart` window gives.

The steps are docs/operations.md's "Deploy on Airflow", as a person would type them.

Alerts go to a real SMTP server, with the Variable and smtp_default stored in the metadata database by
`airflow variables set` and `airflow connections add`: no task fails, so no failure email; backfill runs
are never late; the first unpause's scheduled run of each DAG sends exactly one lateness email when its
deadline (06:00 / 07:00 UTC) has passed, which depends on the time of day.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.helpers import AIRFLOW, DAGS, airflow_uri, body, connect

pytestmark = pytest.mark.slow

PULSECART = str(Path(sys.executable).parent / "pulsecart")
DAILY_DAGS = {"pulsecart_nightly_aggregation": "aggregate", "pulsecart_daily_metrics": "metrics"}
FIRST, LAST = date(2025, 3, 3), date(2025, 3, 8)          # the days to process
DAYS = [FIRST + timedelta(days=n) for n in range((LAST - FIRST).days + 1)]
# Runs fire at 02:00/03:00 on the day after the day they process, and --from-date/--to-date select
# run times: the runs on FIRST+1 … LAST+1 are those between FIRST+1 00:00 and LAST+2 00:00.
FROM_DATE, TO_DATE = FIRST + timedelta(days=1), LAST + timedelta(days=2)
SEED = ["--start", FIRST.isoformat(), "--days", str(len(DAYS) + 1),   # one day past: check-complete passes
        "--users", "2000", "--events-per-day", "20000", "--seed", "15"]
STARTUP_TIMEOUT = 300
BACKFILL_TIMEOUT = 900


def sqlalchemy_url(conninfo: str) -> str:
    """A libpq conninfo or URL as the SQLAlchemy URL Airflow's metadata DB takes (sockets go in ?host=)."""
    parts = conninfo_to_dict(make_conninfo(conninfo))
    auth = parts.get("user", "")
    if parts.get("password"):
        auth += ":" + urllib.parse.quote(parts["password"], safe="")
    host = parts.get("host", "")
    query = []
    if host.startswith("/"):
        query.append(f"host={urllib.parse.quote(host, safe='')}")
        if parts.get("port"):
            query.append(f"port={parts['port']}")
        hostport = ""
    else:
        hostport = host + (f":{parts['port']}" if parts.get("port") else "")
    url = f"postgresql+psycopg2://{auth}@{hostport}/{parts['dbname']}"
    return url + ("?" + "&".join(query) if query else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group (Airflow shuts down its executor and task processes), then SIGKILL
    whatever is left of it and of every descendant, including any that left the group."""
    try:
        family = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


class Deployment:
    def __init__(self, home: Path, env: dict, metadata: str):
        self.home, self.env, self.metadata = home, env, metadata
        self.processes: dict[str, subprocess.Popen] = {}

    def airflow(self, *args, timeout=300) -> subprocess.CompletedProcess:
        result = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, check=False,
                                timeout=timeout)
        assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        return result

    def start(self, name: str, *args) -> None:
        with open(self.home / f"{name}.log", "w") as log:
            self.processes[name] = subprocess.Popen([AIRFLOW, name, *args], env=self.env, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"airflow {name} exited with {process.returncode}:\n{self.logs(name)}"

    def logs(self, *names) -> str:
        names = names or tuple(self.processes)
        text = ""
        for name in names:
            path = self.home / f"{name}.log"
            text += f"\n--- {name}.log (tail) ---\n" + (path.read_text(errors="replace")[-4000:] if path.exists() else "")
        return text

    def task_logs(self) -> str:
        text = ""
        for path in sorted((self.home / "logs").rglob("*.log")):
            text += f"\n--- {path.relative_to(self.home)} ---\n" + path.read_text(errors="replace")[-2000:]
        return text[-12000:]

    def query(self, sql: str, params=()) -> list:
        with connect(self.metadata, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def wait(self, what: str, ready, timeout: float, interval: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = ready()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}{self.logs()}"
            time.sleep(interval)


def deployment_env(tmp_path: Path, metadata: str) -> dict[str, str]:
    """The environment of every Airflow component: the settings of docs/operations.md, metadata on ``metadata``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PULSECART_"))}
    env.update({
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(metadata),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        # Faster pickup than the defaults, nothing else changed.
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "PYTHONDONTWRITEBYTECODE": "1",   # nothing written into dags/
    })
    return env


@contextmanager
def running(deployed: "Deployment", *settings: tuple[str, ...]) -> Iterator["Deployment"]:
    """The metadata database migrated, ``settings`` made with the airflow CLI, then the api-server, the
    dag-processor and the scheduler started; all stopped afterwards, whatever happened."""
    try:
        deployed.airflow("db", "migrate", timeout=600)
        for args in settings:
            deployed.airflow(*args)
        for component in ("api-server", "dag-processor", "scheduler"):
            deployed.start(component)
        yield deployed
    finally:
        for process in deployed.processes.values():
            stop(process)


def wait_until_serving(deployed: "Deployment", dag_ids: list[str]) -> None:
    """The api-server answers and the DAGs ``dag_ids`` are parsed."""
    health = f"{deployed.env['AIRFLOW__API__BASE_URL']}/api/v2/monitor/health"

    def api_up():
        try:
            with urllib.request.urlopen(health, timeout=5) as response:  # noqa: S310 - the http URL we configured
                return response.status == 200
        except OSError:
            return False

    deployed.wait("the api-server", api_up, STARTUP_TIMEOUT)
    deployed.wait("the DAGs to be parsed", lambda: len(deployed.query(
        "SELECT dag_id FROM dag WHERE dag_id = ANY(%s) AND NOT is_stale", (dag_ids,))) == len(dag_ids),
        STARTUP_TIMEOUT)


@pytest.fixture
def deployment(tmp_path, new_database, db_url, smtp_sink):
    """Airflow 3 for real: metadata on its own PostgreSQL database, dag-processor, scheduler and
    api-server as process groups of their own. The connections and variables go into the metadata
    database, as the deploy steps in docs/operations.md put them."""
    metadata = new_database(migrated=False)
    with running(Deployment(tmp_path, deployment_env(tmp_path, metadata), metadata),
                 ("connections", "add", "pulsecart_db", "--conn-uri", airflow_uri(db_url)),
                 ("variables", "set", "pulsecart_cli", PULSECART),
                 ("connections", "add", "smtp_default", "--conn-uri", smtp_sink.connection_uri),
                 ("variables", "set", "pulsecart_alert_emails", "ops@pulsecart.test")) as deployed:
        yield deployed


def pulsecart(url: str, *args) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PULSECART_"))}
    result = subprocess.run([PULSECART, *args], env=env | {"PULSECART_DATABASE_URL": url},
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, f"pulsecart {' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result.stdout


def contents(url: str, table: str, where: str = "") -> Counter:
    """Every row of a table, without its timestamp columns (computed_at and the like)."""
    with connect(url) as conn:
        columns = [name for name, kind in conn.execute(   # of the table pulsecart's search_path finds
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))
            if not kind.startswith("timestamp")]
        assert columns, table
        # Names from the catalog and the test's own filters; no values.
        rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} {where}").fetchall()  # noqa: S608
    return Counter(rows)


def differences(airflow_db: str, serial_db: str, table: str, where: str = "") -> str:
    ours, serial = contents(airflow_db, table, where), contents(serial_db, table, where)
    if ours == serial:
        return ""
    extra, missing = ours - serial, serial - ours
    return (f"{table}: {sum(extra.values())} of {sum(ours.values())} rows differ from the serial window's "
            f"{sum(serial.values())} (e.g. Airflow {sorted(extra)[:3]}, serial {sorted(missing)[:3]})")


def backfill_run_id(dag_id: str, day: date) -> str:
    """The backfill run that processes ``day``: it fires at 02:00 (03:00) the day after."""
    hour = 2 if dag_id == "pulsecart_nightly_aggregation" else 3
    return f"backfill__{day + timedelta(days=1)}T{hour:02}:00:00+00:00"


def backfill_runs(deployed: Deployment) -> list:
    return deployed.query(
        "SELECT dag_id, run_id, state FROM dag_run WHERE run_type = 'backfill' AND dag_id = ANY(%s)"
        " ORDER BY dag_id, logical_date", (list(DAILY_DAGS),))


def check_alerts(deployed: Deployment, smtp_sink) -> None:
    """The first unpause's scheduled run of each DAG, whose day never completes here, sends one lateness
    email from its finished_by_deadline task once its deadline (06:00 / 07:00 UTC) has passed; the
    backfill's runs send none. The Variable and smtp_default live in the metadata database."""
    by = {"pulsecart_nightly_aggregation": "06:00 UTC", "pulsecart_daily_metrics": "07:00 UTC"}
    now = datetime.now(UTC)
    scheduled = deployed.query("SELECT dag_id, logical_date FROM dag_run WHERE run_type = 'scheduled'"
                               " AND dag_id = ANY(%s)", (list(DAILY_DAGS),))
    due = [(dag_id, logical_date) for dag_id, logical_date in scheduled
           if logical_date + timedelta(hours=4) < now - timedelta(seconds=30)]
    expected = sorted(f"[pulsecart] LATE {dag_id} for {(logical_date - timedelta(days=1)).date()}:"
                      f" not finished by {by[dag_id]}" for dag_id, logical_date in due)
    deployed.wait("the lateness emails", lambda: len(smtp_sink.messages) >= len(expected), 300, interval=2)
    assert sorted(m["Subject"] for m in smtp_sink.messages) == expected, deployed.task_logs()
    jobs = {"pulsecart_nightly_aggregation": "aggregate", "pulsecart_daily_metrics": "metrics"}
    for message in smtp_sink.messages:
        assert message["X-Envelope-To"] == "ops@pulsecart.test"
        dag_id, day = message["Subject"].split()[2], message["Subject"].split()[4].rstrip(":")
        assert f"Rerun by hand: pulsecart {jobs[dag_id]} --date {day}\n" in body(message) + "\n", body(message)
    backfill_checks = deployed.query("SELECT DISTINCT state FROM task_instance WHERE task_id = 'finished_by_deadline'"
                                     " AND run_id LIKE 'backfill__%%'")
    assert backfill_checks == [("success",)]
    print(f"alerts: {len(due)} scheduled runs past their deadline, {len(expected)} lateness emails")


def test_a_parallel_backfill_on_a_real_scheduler_equals_a_serial_window(deployment, db_url, new_database, smtp_sink):
    started = time.monotonic()
    serial_db = new_database()
    pulsecart(db_url, "seed", *SEED)
    pulsecart(serial_db, "seed", *SEED)

    wait_until_serving(deployment, list(DAILY_DAGS))
    assert deployment.query("SELECT bool_and(is_paused) FROM dag")[0][0], "DAGs register paused"

    deployment.airflow("dags", "unpause", "-y", "--treat-dag-id-as-regex",
                       "^(pulsecart_nightly_aggregation|pulsecart_daily_metrics)$")
    # Days FIRST … LAST through Airflow, as an operator asks for them: pulsecart computes the run range
    # (FROM_DATE … TO_DATE) and runs `airflow backfill create` with the airflow on PATH.
    path = f"{Path(AIRFLOW).parent}{os.pathsep}{os.environ['PATH']}"
    creates = [subprocess.Popen([PULSECART, job, "--window", f"{FIRST}..{LAST}", "--via", "airflow", "--run",
                                 "--max-active-runs", "3"],
                                env=deployment.env | {"PATH": path}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
               for job in DAILY_DAGS.values()]
    # `--run` waits for the runs and shows each day as its run ends (Airflow's backfill has no such view).
    for process, job in zip(creates, DAILY_DAGS.values(), strict=True):
        out, _ = process.communicate(timeout=BACKFILL_TIMEOUT)
        assert process.returncode == 0, out[-3000:] + deployment.task_logs()
        assert f"--from-date {FROM_DATE} --to-date {TO_DATE} --reprocess-behavior completed --max-active-runs 3" in out
        assert sorted(line.split(" (")[0] for line in out.splitlines() if line.startswith(f"{job} 20")) == [
            f"{job} {day}: success" for day in DAYS], out[-3000:]
        assert "all 6 day(s) succeeded" in out

    # Meanwhile, the truth: one serial window of each job over the same days on the same events.
    window = f"{FIRST}..{LAST}"
    pulsecart(serial_db, "aggregate", "--window", window)
    pulsecart(serial_db, "metrics", "--window", window)

    expected_run_ids = {dag_id: [backfill_run_id(dag_id, day) for day in DAYS] for dag_id in DAILY_DAGS}

    def backfill_done():
        broken = deployment.query(
            "SELECT dag_id, run_id, task_id, state FROM task_instance"
            " WHERE run_id LIKE 'backfill__%%' AND state IN ('failed', 'up_for_retry', 'upstream_failed')")
        assert not broken, f"tasks failed: {broken}{deployment.task_logs()}{deployment.logs('scheduler')}"
        runs = backfill_runs(deployment)
        return len(runs) == 2 * len(DAYS) and all(state in ("success", "failed") for *_, state in runs)

    deployment.wait("the backfill's runs to finish", backfill_done, BACKFILL_TIMEOUT, interval=2)
    runs = backfill_runs(deployment)
    assert {(dag_id, run_id) for dag_id, run_id, _ in runs} == {
        (dag_id, run_id) for dag_id, run_ids in expected_run_ids.items() for run_id in run_ids}
    assert {state for *_, state in runs} == {"success"}, runs

    with connect(db_url) as conn:
        ledger = conn.execute("SELECT job, run_date, status, trigger, airflow_run_id FROM job_runs"
                              " WHERE run_date BETWEEN %s AND %s ORDER BY job, run_date", (FIRST, LAST)).fetchall()
        outside = conn.execute("SELECT job, run_date, airflow_run_id FROM job_runs"
                               " WHERE run_date NOT BETWEEN %s AND %s", (FIRST, LAST)).fetchall()
    assert ledger == [(job, day, "succeeded", "airflow", backfill_run_id(dag_id, day))
                      for dag_id, job in sorted(DAILY_DAGS.items(), key=lambda item: item[1]) for day in DAYS]
    pulsecart(db_url, "status", "--end", str(LAST), "--days", str(len(DAYS)), "--check")  # exit 0: all succeeded
    # The first unpause also makes one run per DAG for the latest slot (catchup=False), for yesterday
    # (UTC): both DAGs' sensors hold it, since those events never arrive here, so it records nothing.
    assert outside == [], outside
    assert sorted(deployment.query("SELECT dag_id, state FROM dag_run WHERE run_type = 'scheduled'")) == [
        (dag_id, "running") for dag_id in sorted(DAILY_DAGS)]

    with connect(db_url) as conn:   # how parallel it was (reported, not asserted: timing varies)
        overlapping = conn.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM job_runs a JOIN job_runs b ON a.job = b.job"
            " AND b.started_at < a.finished_at AND b.finished_at > a.started_at"
            " WHERE a.job = 'aggregate' AND a.run_date BETWEEN %s AND %s GROUP BY a.id) c", (FIRST, LAST)).fetchone()[0]

    problems = [differences(db_url, serial_db, table) for table in
                ("event_aggregates", "personalization_score_history", "personalization_scores")]
    problems.append(differences(db_url, serial_db, "daily_metrics", f"WHERE date BETWEEN '{FIRST}' AND '{LAST}'"))
    problems = [p for p in problems if p]

    # An operator forgets a day Airflow already ran successfully and asks Airflow for it again: it runs.
    again = DAYS[2]
    pulsecart(db_url, "forget", "aggregate", "--date", str(again))
    deployment.wait("the first backfill to be marked complete (one running backfill per DAG)", lambda: deployment.query(
        "SELECT count(*) FROM backfill WHERE completed_at IS NULL")[0][0] == 0, BACKFILL_TIMEOUT, interval=2)
    rerun = subprocess.run([PULSECART, "aggregate", "--date", str(again), "--via", "airflow", "--run", "--json"],
                           env=deployment.env | {"PATH": path}, capture_output=True, text=True,
                           timeout=BACKFILL_TIMEOUT, check=False)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert json.loads(rerun.stdout)["runs"] == [
        {"date": str(again), "state": "success", "run_id": backfill_run_id("pulsecart_nightly_aggregation", again)}]

    def rerun_done():
        with connect(db_url) as conn:
            return conn.execute("SELECT count(*) FROM job_runs WHERE job = 'aggregate' AND run_date = %s"
                                " AND status = 'succeeded' AND id > (SELECT max(id) FROM job_runs WHERE status = 'forgotten')",
                                (again,)).fetchone()[0] == 1

    deployment.wait("Airflow's rerun of a day it had already run", rerun_done, BACKFILL_TIMEOUT, interval=2)
    pulsecart(db_url, "status", "--end", str(LAST), "--days", str(len(DAYS)), "--check")
    problems += [p for p in (differences(db_url, serial_db, "personalization_score_history"),) if p]
    check_alerts(deployment, smtp_sink)
    print(f"backfill test: {time.monotonic() - started:.0f} s after the services started;"
          f" at most {overlapping} aggregate runs at once;"
          f" runs of the first unpause so far: {outside}")
    assert not problems, "\n".join(problems)
