"""`pulsecart forget JOB --date D`: a day's results removed as if the job had never run for it (a mistyped
--date), what depended on them recomputed, the ledger and status telling the truth, and a rerun
bringing everything back."""

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta

from tests.helpers import (
    all_history,
    connect,
    history,
    insert_events,
    metrics_row,
    runs,
    scores_by_definition,
    utc,
)

FIRST = date(2025, 3, 1)
WINDOW = f"{FIRST}..{FIRST + timedelta(days=7)}"


def day(n: int) -> date:
    return FIRST + timedelta(days=n - 1)


def week_of_events(conn):
    insert_events(conn, [(user, kind, utc(2025, 3, n, 12)) for n in range(1, 9)
                         for user, kind in (("alice", "product.viewed"), ("bob", "order.placed"))
                         if user == "alice" or n % 2])


def current_scores(conn) -> dict:
    return dict(conn.execute("SELECT user_id, score FROM personalization_scores").fetchall())


def day_state(cli, job: str, on: date) -> dict:
    status = json.loads(cli("status", "--job", job, "--end", str(on), "--days", "1", "--json").stdout)
    return status["jobs"][job]["days"][0]


def test_a_mistyped_day_that_became_the_current_scores_is_forgotten_and_the_real_newest_day_is_current(cli, conn):
    week_of_events(conn)
    assert cli("aggregate", "--window", WINDOW).exit_code == 0
    expected = current_scores(conn)
    assert expected == history(conn, day(8)) and expected
    assert cli("aggregate", "--date", "2026-03-08").exit_code == 0      # the year mistyped: a past day, no events
    assert current_scores(conn) == {}

    result = cli("forget", "aggregate", "--date", "2026-03-08", "--json")

    assert result.exit_code == 0, result.output
    [forgotten] = json.loads(result.stdout)["days"]
    assert forgotten["status"] == "forgotten"
    assert forgotten["details"]["current_scores_as_of"] == str(day(8))
    assert current_scores(conn) == expected
    assert day_state(cli, "aggregate", date(2026, 3, 8))["state"] == "missing"
    assert runs(conn)[-1][:2] == (date(2026, 3, 8), "forgotten")
    check = cli("status", "--check", "--job", "aggregate", "--end", "2026-03-08", "--days", "1")
    forget_run = json.loads(result.stdout)["days"][0]["run_id"]
    assert check.exit_code == 5
    assert check.stdout.strip() == (f"aggregate 2026-03-08 missing: forgotten by run {forget_run}; "
                                    "fix: pulsecart aggregate --date 2026-03-08")
    assert "2026-03-08 forget" in cli("runs", "--status", "forgotten").output


def test_forgetting_a_day_rescores_the_days_that_read_it_and_a_rerun_restores_the_window(cli, conn):
    week_of_events(conn)
    assert cli("aggregate", "--window", WINDOW).exit_code == 0
    serial = all_history(conn)

    result = cli("forget", "aggregate", "--date", str(day(4)), "--json")

    details = json.loads(result.stdout)["days"][0]["details"]
    assert (details["counts_removed"], details["scores_removed"]) == (1, 2)   # alice counted; alice, bob scored
    assert details["scores_refreshed"] == [str(day(n)) for n in range(5, 9)]
    assert all_history(conn) == scores_by_definition(conn)              # day 4's counts are no longer read
    assert history(conn, day(5))["alice"] == 4 and history(conn, day(4)) == {}
    assert "0 counts and 0 scores removed" in cli("forget", "aggregate", "--date", str(day(4))).output  # again: nothing left
    plan = cli("aggregate", "--window", WINDOW, "--only-missing", "--dry-run", "--json")
    assert [d["date"] for d in json.loads(plan.stdout)["days"]] == [str(day(4))]

    assert cli("aggregate", "--window", WINDOW, "--only-missing").exit_code == 0
    assert all_history(conn) == serial
    assert cli("status", "--check", "--job", "aggregate", "--end", str(day(8)), "--days", "8").exit_code == 0


def test_forgetting_metrics_removes_the_row_and_if_missing_runs_the_day_again(cli, conn):
    week_of_events(conn)
    assert cli("metrics", "--date", str(day(3))).exit_code == 0
    assert metrics_row(conn, day(3)) is not None

    result = cli("forget", "metrics", "--date", str(day(3)))

    assert result.exit_code == 0, result.output
    assert "1 daily_metrics row removed" in result.output
    assert metrics_row(conn, day(3)) is None
    assert day_state(cli, "metrics", day(3))["state"] == "missing"
    again = cli("metrics", "--date", str(day(3)), "--if-missing", "--json")
    assert [d["status"] for d in json.loads(again.stdout)["days"]] == ["succeeded"]
    assert metrics_row(conn, day(3)) is not None


def test_forget_accepts_future_days_and_refuses_bad_input_with_exit_2(cli):
    assert cli("forget", "aggregate", "--date", "2999-01-01").exit_code == 0
    for args in (("forget", "reconcile", "--date", "2025-03-01"), ("forget", "aggregate"),
                 ("forget", "aggregate", "--date", "2025-02-30")):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


def test_a_forget_that_fails_changes_nothing_and_leaves_the_day_as_it_was_in_status(cli, conn):
    week_of_events(conn)
    assert cli("aggregate", "--window", WINDOW).exit_code == 0
    before = all_history(conn)
    conn.execute("""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'injected failure'; END $$;
        CREATE TRIGGER refuse BEFORE DELETE ON event_aggregates FOR EACH ROW EXECUTE FUNCTION refuse();""")

    result = cli("forget", "aggregate", "--date", str(day(4)))

    assert result.exit_code == 1 and "injected failure" in result.output
    assert all_history(conn) == before
    assert day_state(cli, "aggregate", day(4))["state"] == "succeeded"    # not "failed": nothing changed
    failed_plan = cli("aggregate", "--window", WINDOW, "--only-failed", "--dry-run", "--json")
    assert json.loads(failed_plan.stdout)["days"] == []
    [row] = conn.execute("SELECT target, status FROM job_runs WHERE run_date = %s AND target IS NOT NULL",
                         (day(4),)).fetchall()
    assert row == ("forget", "failed")


def test_forget_refuses_more_than_a_year_of_days_at_once(cli, conn):
    result = cli("forget", "aggregate", "--window", "2025-01-01..9998-12-31")
    assert result.exit_code == 2
    assert "is more than 366 at once" in result.output
    assert conn.execute("SELECT count(*) FROM job_runs").fetchone()[0] == 0


def wait_for(conn, sql, params=(), timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(sql, params).fetchone()
        if row and row[0]:
            return row[0]
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


def test_a_connection_lost_as_the_forget_ends_leaves_data_and_ledger_agreeing(cli, conn, db_url):
    """The forget's ledger row is finished inside its own transaction: when the session dies before that
    commits, the removal rolls back with it, so status never shows ✓ over a removed day."""
    week_of_events(conn)
    assert cli("aggregate", "--window", WINDOW).exit_code == 0
    with connect(db_url) as scores_lock, connect(db_url) as row_lock:
        scores_lock.execute("SELECT pg_advisory_xact_lock(aggregate_scores_lock_key())")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CTX_")}
        forget = subprocess.Popen([sys.executable, "-m", "pulsecart_cli", "forget", "aggregate", "--date", str(day(4))],
                                  env=env | {"PULSECART_DATABASE_URL": db_url}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        run_id = wait_for(conn, "SELECT id FROM job_runs WHERE target = 'forget' AND status = 'running'")
        row_lock.execute("SELECT 1 FROM job_runs WHERE id = %s FOR UPDATE", (run_id,))
        scores_lock.commit()        # the forget goes on, and blocks where it writes its ledger row
        backend = wait_for(conn, "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                                 " AND wait_event_type = 'Lock'", (f"pulsecart aggregate forget {day(4)}",))
        conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
        row_lock.rollback()
        forget.communicate(timeout=30)
    assert forget.returncode != 0
    assert history(conn, day(4)) != {}                                   # rolled back: nothing removed
    assert day_state(cli, "aggregate", day(4))["state"] == "succeeded"   # and status agrees
