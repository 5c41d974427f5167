"""The foundation: migrations, configuration, the embedded default, seeding, and errors."""

import os
import signal
import subprocess
import sys
import time
from datetime import date

import pytest

from pulsecart_cli import migrations
from pulsecart_cli.seed import SeedSpec, seed_events
from tests.helpers import connect, run_pulsecart

APP_TABLES = {"events", "event_aggregates", "personalization_scores", "daily_metrics"}
PULSECART_TABLES = {"personalization_score_history", "aggregated_days", "job_runs", "schema_migrations",
                    "dead_letter_quarantine", "event_changes", "event_change_totals", "seed_loads"}


def tables(conn, schema="public"):
    """Tables and views."""
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {r[0] for r in rows}


def test_migrate_fresh_then_rerun(empty_db_url, monkeypatch):
    result = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url})
    assert result.returncode == 0, result.stderr
    assert "applied 0001_pulsecart_schema" in result.stdout
    with connect(empty_db_url) as conn:
        assert tables(conn) == APP_TABLES                   # only the application's tables in public
        assert tables(conn, "pulsecart") == PULSECART_TABLES
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == [m.version for m in migrations.available()]

    again = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url})
    assert again.returncode == 0
    assert again.stdout.strip() == "schema is up to date"

    status = run_pulsecart("db", "status", env={"PULSECART_DATABASE_URL": empty_db_url})
    assert status.returncode == 0
    assert "0001_pulsecart_schema  applied" in status.stdout
    assert "pending" not in status.stdout


def test_db_status_lists_pending_on_empty_database(empty_db_url):
    status = run_pulsecart("db", "status", "--database-url", empty_db_url)
    assert status.returncode == 0
    assert "0001_pulsecart_schema  pending" in status.stdout


def test_job_on_unmigrated_database_says_how_to_fix(empty_db_url):
    result = run_pulsecart("aggregate", "--date", "2025-03-03", "--database-url", empty_db_url)
    assert result.returncode == 1
    pending = ", ".join(f"{m.version:04d}_{m.name}" for m in migrations.available())
    assert pending.startswith("0001_pulsecart_schema, 0002_event_change_tracking")
    assert result.stderr.strip() == (
        f"Error: the database schema is not migrated (pending: {pending}) (hint: run `pulsecart db migrate`)"
    )
    assert "Traceback" not in result.stderr


def test_events_day_range_uses_the_timestamp_index(conn):
    conn.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in conn.execute(
        "EXPLAIN SELECT user_id, event_type FROM events"
        " WHERE timestamp >= '2025-03-03T00:00Z' AND timestamp < '2025-03-04T00:00Z'"))
    assert "events_timestamp_idx" in plan


def test_embedded_default_starts_once_and_is_managed_by_dev_db(tmp_path):
    env = {"PULSECART_HOME": str(tmp_path / "home"), "PULSECART_DATABASE_URL": ""}
    try:
        first = run_pulsecart("db", "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stderr.strip() == f"pulsecart: started the embedded PostgreSQL in {tmp_path / 'home' / 'pgdata'}"
        assert "applied 0001_pulsecart_schema" in first.stdout

        second = run_pulsecart("db", "migrate", env=env)
        assert second.returncode == 0
        assert second.stderr == ""
        assert second.stdout.strip() == "schema is up to date"

        url = run_pulsecart("dev", "db", "url", env=env).stdout.strip()
        with connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1
    finally:
        stop = run_pulsecart("dev", "db", "stop", env=env)
    assert stop.returncode == 0
    assert stop.stdout.strip() == "stopped"
    assert run_pulsecart("dev", "db", "stop", env=env).stdout.strip() == "not running"


def test_a_signal_during_the_first_start_of_the_embedded_database_waits_for_it_to_finish(tmp_path):
    """initdb writes PG_VERSION early: a SIGTERM that cut the first start there left a data directory that
    looked initialised and had no database, for good. The signal now takes effect once the start is done."""
    home = tmp_path / "home"
    env = {**os.environ, "PULSECART_HOME": str(home), "PULSECART_DATABASE_URL": ""}
    process = subprocess.Popen([sys.executable, "-m", "pulsecart_cli", "status"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (home / "pgdata" / "PG_VERSION").exists():   # initdb is under way
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        assert (process.returncode, err.splitlines()[-1]) == (143, "Error: terminated by SIGTERM")

        migrated = run_pulsecart("db", "migrate", env={"PULSECART_HOME": str(home), "PULSECART_DATABASE_URL": ""})
        assert migrated.returncode == 0, migrated.stderr
        url = run_pulsecart("dev", "db", "url", env={"PULSECART_HOME": str(home)}).stdout.strip()
        with connect(url) as conn:
            assert conn.execute("SHOW shared_buffers").fetchone()[0] == "512MB"   # the first start's settings
            conn.commit()
            conn.autocommit = True
            conn.execute("ALTER SYSTEM RESET ALL")
        # A SIGTERM to the process group (as Airflow sends it) can end the first start after initdb and before
        # its settings: the next start makes them.
        (home / "pgdata" / "pulsecart_settings").unlink()
        run_pulsecart("dev", "db", "stop", env={"PULSECART_HOME": str(home)})
        url = run_pulsecart("dev", "db", "url", env={"PULSECART_HOME": str(home)}).stdout.strip()
        with connect(url) as conn:
            assert conn.execute("SHOW shared_buffers").fetchone()[0] == "512MB"
    finally:
        run_pulsecart("dev", "db", "stop", env={"PULSECART_HOME": str(home)})

def test_missing_url_under_airflow_is_an_error(tmp_path):
    env = {"PULSECART_HOME": str(tmp_path), "PULSECART_DATABASE_URL": "", "AIRFLOW_CTX_DAG_ID": "some_dag"}
    result = run_pulsecart("db", "migrate", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: no database URL under Airflow: set PULSECART_DATABASE_URL")
    assert not (tmp_path / "pgdata").exists()


def _events_fingerprint(conn):
    return conn.execute(
        "SELECT count(*), md5(string_agg(event_id::text || user_id || event_type || timestamp::text"
        " || payload::text, ',' ORDER BY event_id)) FROM events"
    ).fetchone()


def test_seed_is_deterministic(conn, new_database):
    spec = SeedSpec(start=date(2025, 3, 1), days=2, users=50, events_per_day=500, seed=7)
    seed_events(conn, spec)
    with connect(new_database(), autocommit=True) as other:
        seed_events(other, spec)
        assert _events_fingerprint(other) == _events_fingerprint(conn)
        other.execute("TRUNCATE events")
        seed_events(other, SeedSpec(spec.start, 2, 50, 500, seed=8))
        assert _events_fingerprint(other) != _events_fingerprint(conn)
    assert _events_fingerprint(conn)[0] == 1000


def test_seed_has_a_realistic_mix_inside_each_utc_day(cli, conn):
    result = cli("seed", "--start", "2025-03-01", "--days", "3", "--users", "200",
                 "--events-per-day", "4000", "--seed", "1")
    assert result.exit_code == 0, result.output
    counts = dict(conn.execute("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
    assert sum(counts.values()) == 12_000
    assert counts["product.viewed"] > counts["cart.item_added"] > counts["cart.abandoned"] > 0
    assert counts["order.placed"] > 0
    per_day = conn.execute(
        "SELECT (timestamp AT TIME ZONE 'UTC')::date, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    assert [(str(d), n) for d, n in per_day] == [("2025-03-01", 4000), ("2025-03-02", 4000), ("2025-03-03", 4000)]
    bad = conn.execute(
        "SELECT count(*) FROM events WHERE event_type = 'order.placed'"
        " AND NOT coalesce(payload->>'total' ~ '^[0-9.]+$', false)").fetchone()[0]
    assert 0 < bad < counts["order.placed"] * 0.1
    assert f"{bad:,} orders with an invalid total" in result.stdout
    assert conn.execute("SELECT count(DISTINCT user_id) <= 200 FROM events").fetchone()[0]


def test_seed_twice_with_same_seed_is_a_clear_error(cli):
    args = ("seed", "--start", "2025-03-01", "--days", "1", "--users", "5", "--events-per-day", "10")
    assert cli(*args).exit_code == 0
    again = cli(*args)
    assert again.exit_code == 2
    assert "already hold events from this --seed" in again.stderr


@pytest.mark.parametrize("args, code, message", [
    (["nope"], 2, "Error: No such command 'nope'. (see 'pulsecart --help')"),
    (["aggregate", "--date", "2025-03-01", "--bogus"], 2, "Error: No such option: --bogus"),
    (["aggregate"], 2, "Error: give exactly one of --date D or --window A..B"),
    (["aggregate", "--date", "2025-02-30"], 2,
     "Error: invalid --date '2025-02-30': expected YYYY-MM-DD, 'yesterday', 'today' or 'N days ago'"),
    (["metrics", "--window", "2025-03-05..2025-03-01"], 2,
     "Error: reversed window '2025-03-05..2025-03-01': 2025-03-05 is after 2025-03-01"),
    (["metrics", "--date", "2025-03-01", "--window", "2025-03-01..2025-03-02"], 2,
     "Error: give exactly one of --date D or --window A..B"),
    (["aggregate", "--date", "2025-03-01", "--database-url", "not a url"], 2,
     "Error: malformed database URL 'not a url'"),
    (["aggregate", "--date", "2025-03-01", "--database-url", "postgresql://u:pw@localhost:notaport/db"], 2,
     "Error: malformed database URL 'postgresql://u:***@localhost:notaport/db'"),
    (["aggregate", "--date", "2025-03-01", "--database-url", "postgresql://u:pw@127.0.0.1:1,[::1]:99999/db"], 2,
     "Error: malformed database URL 'postgresql://u:***@127.0.0.1:1,[::1]:99999/db': a port is not a number"),
    # libpq's multi-host form is a URL like any other: here both hosts refuse, so it cannot connect
    (["aggregate", "--date", "2025-03-01", "--database-url", "postgresql://u:pw@127.0.0.1:1,[::1]:2/db"], 1,
     "Error: cannot connect to the database at postgresql://u:***@127.0.0.1:1,[::1]:2/db"),
])
def test_bad_input_is_one_line_with_exit_code(args, code, message):
    result = run_pulsecart(*args, env={"PULSECART_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == code
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url, shown", [
    ("postgresql://alice:hunter2secret@127.0.0.1:1/pulsecart", "postgresql://alice:***@127.0.0.1:1/pulsecart"),
    ("host=127.0.0.1 port=1 user=alice password=hunter2secret dbname=pulsecart",
     "host=127.0.0.1 port=1 user=alice password=*** dbname=pulsecart"),
    ("host=127.0.0.1 port=1 password='hunter2secret' dbname=pulsecart", "host=127.0.0.1 port=1 password='***'"),
    ("postgresql://alice@127.0.0.1:1/pulsecart?password=hunter2secret",
     "postgresql://alice@127.0.0.1:1/pulsecart?password=***"),
])
def test_unreachable_database_never_prints_the_password(url, shown):
    result = run_pulsecart("aggregate", "--date", "2025-03-01", env={"PULSECART_DATABASE_URL": url})
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot connect to the database at {shown}")
    assert "hunter2secret" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    result = run_pulsecart("--debug", "aggregate", "--date", "2025-03-01",
                           env={"PULSECART_DATABASE_URL": "postgresql://alice:hunter2secret@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "hunter2secret" not in result.stderr


def test_version_and_module_entry_point():
    result = run_pulsecart("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pulsecart ")
