"""An aggregate window runs two days at once (day D's counts while D-1 finishes its scores), yet commits
in order and keeps the serial run's promises: a failure stops the later days, Ctrl-C rolls back what is
running, a busy lock exits 3 after the days before it are done, and a refused second connection only
makes it serial."""

import json
import uuid
from datetime import date

from psycopg import sql
from psycopg.conninfo import make_conninfo

from pulsecart_cli import grants
from pulsecart_cli.units import lock_keys
from tests.helpers import (
    SLOW_THEN_FAIL_ON,
    WINDOW,
    connect,
    five_days_with_markers,
    has_marker,
    history,
    interrupt_when_running,
    run_pulsecart,
    runs,
)


def runs_started(conn):
    return conn.execute("SELECT last_value FROM job_runs_id_seq").fetchone()[0]


def test_a_failed_day_drops_the_next_day_already_started(cli, conn):
    five_days_with_markers(conn)
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-03", seconds=1, fail="true"))

    result = cli("aggregate", "--window", WINDOW, "--json")

    assert result.exit_code == 1
    assert [(d["date"], d["status"]) for d in json.loads(result.stdout)["days"]] == [
        ("2025-03-01", "succeeded"), ("2025-03-02", "succeeded"), ("2025-03-03", "failed")]
    assert [(d, s) for d, s, _ in runs(conn)] == [
        (date(2025, 3, 1), "succeeded"), (date(2025, 3, 2), "succeeded"), (date(2025, 3, 3), "failed")]
    assert runs_started(conn) == 4          # 2025-03-04 had started while 2025-03-03 slept; it left no row
    assert not has_marker(conn, date(2025, 3, 2))
    assert all(has_marker(conn, date(2025, 3, d)) for d in (3, 4, 5))   # failed, dropped, never run
    assert "injected failure for 2025-03-03" in runs(conn)[2][2]


def test_keep_going_lets_the_next_day_finish_after_a_failure(cli, conn):
    five_days_with_markers(conn)
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-03", seconds=1, fail="true"))

    result = cli("aggregate", "--window", WINDOW, "--keep-going", "--json")

    assert result.exit_code == 1
    days = json.loads(result.stdout)["days"]
    assert [d["status"] for d in days] == ["succeeded", "succeeded", "failed", "succeeded", "succeeded"]
    assert [has_marker(conn, date(2025, 3, d)) for d in range(1, 6)] == [False, False, True, False, False]
    # The day after the failed one is scored from scratch: days 1, 2 and 4, and day 3 as it was.
    assert days[3]["details"]["scores_from_previous_day"] is False
    assert history(conn, date(2025, 3, 4)) == {"a": 3, "b": 3, "marker": 42}


def test_ctrl_c_rolls_back_both_days_in_flight(conn, db_url):
    five_days_with_markers(conn)
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-02", seconds=30, fail="false"))
    result = interrupt_when_running(conn, db_url, "aggregate", "--window", WINDOW, running=2)
    out, err = result.stdout, result.stderr

    assert result.returncode == 130, err
    assert "2025-03-01" in out and "succeeded" in out                 # the summary so far
    assert "interrupted: aggregate 2025-03-02, 2025-03-03 rolled back and marked failed; 2 day(s) not run" in err
    assert runs(conn) == [(date(2025, 3, 1), "succeeded", None), (date(2025, 3, 2), "failed", "interrupted"),
                          (date(2025, 3, 3), "failed", "interrupted")]
    assert [has_marker(conn, date(2025, 3, d)) for d in range(1, 6)] == [False, True, True, True, True]


def test_a_busy_day_exits_3_after_the_days_before_it(cli, conn, db_url):
    five_days_with_markers(conn)
    with connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%(job_key)s, %(unit_key)s)",
                       lock_keys("aggregate", date(2025, 3, 3), None))
        result = cli("aggregate", "--window", WINDOW)

    assert result.exit_code == 3
    assert "aggregate 2025-03-03 is locked by another session" in result.stderr
    assert [(d, s) for d, s, _ in runs(conn)] == [(date(2025, 3, 1), "succeeded"), (date(2025, 3, 2), "succeeded")]
    assert [has_marker(conn, date(2025, 3, d)) for d in range(1, 6)] == [False, False, True, True, True]


def test_a_window_goes_on_with_one_connection_when_a_second_is_refused(conn, db_url):
    five_days_with_markers(conn)
    role = f"pulsecart_one_connection_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex   # a server that asks for passwords (not the embedded one) gets one
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 1 PASSWORD {}").format(
        sql.Identifier(role), sql.Literal(password)))
    try:
        grants.grant(conn, role)
        result = run_pulsecart("aggregate", "--window", WINDOW, "--json",
                               env={"PULSECART_DATABASE_URL": make_conninfo(db_url, user=role, password=password)})

        assert result.returncode == 0, result.stderr
        assert [d["status"] for d in json.loads(result.stdout)["days"]] == ["succeeded"] * 5
        note = [line for line in result.stderr.splitlines() if line.startswith("note:")]
        assert len(note) == 1 and note[0].startswith("note: ran one day at a time: a second connection failed")
        assert "too many connections for role" in note[0]                  # one line, however long
        assert password not in result.stderr
        assert not any(has_marker(conn, date(2025, 3, d)) for d in range(1, 6))
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
