"""Helpers shared by the tests."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime


def run_pulsecart(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `pulsecart` console entry point in a child process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CTX_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pulsecart_cli", *args], env=full_env,
                          capture_output=True, text=True, check=False, **kwargs)


def insert_events(conn, rows, ingested_at=None):
    """rows: (user_id, event_type, timestamp[, payload]). Returns the event ids."""
    ids = []
    with conn.cursor() as cur:
        for row in rows:
            user_id, event_type, timestamp, *rest = row
            payload = rest[0] if rest else {}
            event_id = uuid.uuid4()
            ids.append(event_id)
            cur.execute(
                "INSERT INTO events (event_id, user_id, event_type, timestamp, payload, ingested_at)"
                " VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()))",
                (event_id, user_id, event_type, timestamp, json.dumps(payload), ingested_at),
            )
    return ids


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def interrupt_when_running(conn, db_url: str, *args, running: int = 1, sig: int = signal.SIGINT,
                           sleeping: int = 0) -> subprocess.CompletedProcess:
    """Start `pulsecart *args`, send ``sig`` (Ctrl-C) once ``running`` ledger rows are running and
    ``sleeping`` server sessions are inside pg_sleep (mid-statement), wait for the exit."""
    process = subprocess.Popen([sys.executable, "-m", "pulsecart_cli", *args],
                               env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while conn.execute("SELECT count(*) FROM job_runs WHERE status = 'running'").fetchone()[0] < running \
            or sleeping_sessions(conn) < sleeping:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(sig)
    out, err = process.communicate(timeout=20)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def sleeping_sessions(conn) -> int:
    """Server sessions of this database inside pg_sleep (a slow statement a test injected)."""
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event = 'PgSleep'").fetchone()[0]
