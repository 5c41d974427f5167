"""aggregate and metrics: exact, rerunnable, per UTC day, transactional, ledgered."""

import json
import signal
import subprocess
import sys
import time
from datetime import date
from decimal import Decimal

import pytest

from pulsecart_cli.ledger import Invocation
from pulsecart_cli.queries import query
from pulsecart_cli.runner import DailyRequest, run_daily
from pulsecart_cli.seed import SeedSpec, seed_events
from pulsecart_cli.units import lock_keys
from tests.helpers import (
    FAIL_ON_MARCH_3,
    SLOW_METRICS,
    D,
    aggregates,
    connect,
    history,
    insert_events,
    metrics_row,
    run_pulsecart,
    utc,
)


def current_scores(conn):
    return {u: (s, a) for u, s, a in conn.execute("SELECT user_id, score, as_of FROM personalization_scores")}


def ledger(conn, job=None):
    return conn.execute(
        "SELECT job, run_date, status, trigger, airflow_run_id, rows_written, details, error"
        " FROM job_runs WHERE %(job)s::text IS NULL OR job = %(job)s ORDER BY id", {"job": job}).fetchall()


# --- aggregate: semantic 1, the day's counts exactly ------------------------------------------------

def test_aggregate_counts_one_utc_day_with_exact_midnight_boundaries(cli, conn):
    insert_events(conn, [
        ("alice", "product.viewed", utc(2025, 3, 2, 23, 59, 59, 999999)),   # previous day
        ("alice", "product.viewed", utc(2025, 3, 3, 0, 0, 0)),              # first instant of D
        ("alice", "product.viewed", utc(2025, 3, 3, 12, 0)),
        ("alice", "order.placed", utc(2025, 3, 3, 23, 59, 59, 999999)),     # last instant of D
        ("bob", "cart.item_added", utc(2025, 3, 3, 8, 30)),
        ("bob", "cart.item_added", utc(2025, 3, 4, 0, 0, 0)),               # next day
    ])
    result = cli("aggregate", "--date", "2025-03-03")
    assert result.exit_code == 0, result.output
    assert aggregates(conn) == {("alice", "order.placed"): 1, ("alice", "product.viewed"): 2,
                                ("bob", "cart.item_added"): 1}


def test_aggregate_ignores_the_session_and_server_time_zone(cli, conn, db_url):
    dbname = conn.info.dbname
    conn.execute(f"ALTER DATABASE {dbname} SET timezone TO 'Pacific/Kiritimati'")  # UTC+14
    insert_events(conn, [
        ("carol", "product.viewed", "2025-03-03 13:30:00+14"),   # 2025-03-02 23:30 UTC
        ("carol", "product.viewed", "2025-03-03 14:30:00+14"),   # 2025-03-03 00:30 UTC
        ("carol", "product.viewed", "2025-03-04 13:59:59+14"),   # 2025-03-03 23:59:59 UTC
    ])
    assert cli("aggregate", "--date", "2025-03-03").exit_code == 0
    assert cli("metrics", "--date", "2025-03-03").exit_code == 0
    assert aggregates(conn) == {("carol", "product.viewed"): 2}


def test_aggregate_rerun_reflects_deleted_and_changed_events(cli, conn):
    ids = insert_events(conn, [
        ("alice", "order.placed", utc(2025, 3, 3, 10)),
        ("alice", "product.viewed", utc(2025, 3, 3, 11)),
        ("bob", "cart.item_added", utc(2025, 3, 3, 12)),
    ])
    assert cli("aggregate", "--date", "2025-03-03").exit_code == 0
    assert len(aggregates(conn)) == 3

    conn.execute("DELETE FROM events WHERE event_id = %s", (ids[0],))
    conn.execute("UPDATE events SET event_type = 'cart.abandoned' WHERE event_id = %s", (ids[2],))
    assert cli("aggregate", "--date", "2025-03-03").exit_code == 0
    assert aggregates(conn) == {("alice", "product.viewed"): 1, ("bob", "cart.abandoned"): 1}
    assert history(conn, D) == {"alice": 1, "bob": 0}
    assert current_scores(conn) == {"alice": (1, D), "bob": (0, D)}


# --- aggregate: semantic 2, scores over D-6 .. D ----------------------------------------------------

def test_score_is_weighted_over_the_seven_days_ending_on_d(cli, conn):
    insert_events(conn, [
        ("alice", "order.placed", utc(2025, 2, 24, 9)),      # D-7: outside the window
        ("alice", "order.placed", utc(2025, 2, 25, 9)),      # D-6: inside
        ("alice", "cart.item_added", utc(2025, 2, 28, 9)),
        ("alice", "cart.item_added", utc(2025, 3, 1, 9)),
        ("alice", "product.viewed", utc(2025, 3, 3, 9)),
        ("alice", "cart.abandoned", utc(2025, 3, 3, 10)),    # weight 0
        ("bob", "product.viewed", utc(2025, 3, 4, 9)),       # D+1: outside
    ])
    result = cli("aggregate", "--window", "2025-02-24..2025-03-03")
    assert result.exit_code == 0, result.output
    assert history(conn, D) == {"alice": 10 + 3 + 3 + 1}
    assert history(conn, date(2025, 2, 24)) == {"alice": 10}
    assert current_scores(conn) == {"alice": (17, D)}


# --- aggregate: semantic 3, current scores are the newest day's, and follow older days' counts ----------

def test_rerunning_an_older_day_keeps_current_scores_on_the_newest_day_and_brings_them_up_to_date(cli, conn):
    insert_events(conn, [
        ("alice", "order.placed", utc(2025, 3, 1, 9)),
        ("bob", "product.viewed", utc(2025, 3, 3, 9)),
    ])
    assert cli("aggregate", "--window", "2025-03-01..2025-03-03").exit_code == 0
    assert current_scores(conn) == {"alice": (10, D), "bob": (1, D)}

    insert_events(conn, [("carol", "order.placed", utc(2025, 3, 1, 10))])   # late, for 03-01
    result = cli("aggregate", "--date", "2025-03-01", "--json")
    assert result.exit_code == 0
    details = json.loads(result.stdout)["days"][0]["details"]
    assert details["scores_refreshed"] == ["2025-03-02", "2025-03-03"]
    assert details["current_scores_as_of"] == str(D) and details["current_scores_updated"] is True
    assert history(conn, date(2025, 3, 1)) == {"alice": 10, "carol": 10}
    assert history(conn, date(2025, 3, 2)) == {"alice": 10, "carol": 10}
    assert current_scores(conn) == {"alice": (10, D), "bob": (1, D), "carol": (10, D)}


def test_a_newer_day_replaces_current_scores_exactly(cli, conn):
    insert_events(conn, [
        ("alice", "order.placed", utc(2025, 3, 1, 9)),
        ("bob", "product.viewed", utc(2025, 3, 9, 9)),
    ])
    assert cli("aggregate", "--date", "2025-03-01").exit_code == 0
    assert current_scores(conn) == {"alice": (10, date(2025, 3, 1))}
    assert cli("aggregate", "--date", "2025-03-09").exit_code == 0   # alice's order is 8 days old
    assert current_scores(conn) == {"bob": (1, date(2025, 3, 9))}


# --- metrics ---------------------------------------------------------------------------------------

def test_metrics_counts_rates_revenue_and_invalid_totals(cli, conn):
    insert_events(conn, [
        ("a", "order.placed", utc(2025, 3, 3, 1), {"total": 19.99}),
        ("a", "order.placed", utc(2025, 3, 3, 2), {"total": "5.01"}),
        ("b", "order.placed", utc(2025, 3, 3, 3), {"total": "N/A"}),
        ("b", "order.placed", utc(2025, 3, 3, 4), {}),
        ("b", "order.placed", utc(2025, 3, 3, 5), {"total": True}),
        ("c", "cart.item_added", utc(2025, 3, 3, 6)),
        ("c", "cart.item_added", utc(2025, 3, 3, 7)),
        ("c", "cart.item_added", utc(2025, 3, 3, 8)),
        ("c", "cart.abandoned", utc(2025, 3, 3, 9)),
        ("c", "product.viewed", utc(2025, 3, 3, 10), {"total": 1000}),   # not an order: not revenue
        ("d", "order.placed", utc(2025, 3, 4, 0), {"total": 50}),        # next day
    ])
    result = cli("metrics", "--date", "2025-03-03", "--json")
    assert result.exit_code == 0, result.output
    assert metrics_row(conn) == (5, 1, Decimal("33.33"), Decimal("25.00"), 3)
    day = json.loads(result.stdout)["days"][0]
    assert day["details"]["invalid_order_totals"] == 3
    assert day["details"]["revenue"] == "25.00"


def test_metrics_for_an_empty_day_writes_a_zero_row(cli, conn):
    result = cli("metrics", "--date", "2025-03-03")
    assert result.exit_code == 0
    assert metrics_row(conn) == (0, 0, None, Decimal(0), 0)


def test_metrics_rerun_replaces_the_row(cli, conn):
    ids = insert_events(conn, [("a", "order.placed", utc(2025, 3, 3, 1), {"total": 10}),
                               ("a", "order.placed", utc(2025, 3, 3, 2), {"total": 5})])
    assert cli("metrics", "--date", "2025-03-03").exit_code == 0
    conn.execute("DELETE FROM events WHERE event_id = %s", (ids[0],))
    assert cli("metrics", "--date", "2025-03-03").exit_code == 0
    assert metrics_row(conn) == (1, 0, None, Decimal(5), 0)
    assert conn.execute("SELECT count(*) FROM daily_metrics").fetchone()[0] == 1


def test_metrics_table_reports_invalid_totals(cli, conn):
    insert_events(conn, [("a", "order.placed", utc(2025, 3, 3, 1), {"total": "12,50"})])
    result = cli("metrics", "--date", "2025-03-03")
    assert result.exit_code == 0
    assert "1 invalid order totals (left out of revenue)" in result.stdout


# --- transactions in a window -------------------------------------------------------------------------


def test_window_failure_keeps_earlier_days_and_leaves_the_failed_day_untouched(cli, conn):
    conn.execute("INSERT INTO daily_metrics VALUES ('2025-03-03', 42, 0, NULL, 0, 0)")
    conn.execute(FAIL_ON_MARCH_3)
    insert_events(conn, [("a", "order.placed", utc(2025, 3, d, 9), {"total": 1}) for d in range(1, 6)])

    result = cli("metrics", "--window", "2025-03-01..2025-03-05", "--json")
    assert result.exit_code == 1
    days = json.loads(result.stdout)["days"]
    assert [(d["date"], d["status"]) for d in days] == [
        ("2025-03-01", "succeeded"), ("2025-03-02", "succeeded"), ("2025-03-03", "failed")]
    assert "injected failure for 2025-03-03" in days[2]["error"]
    assert metrics_row(conn, date(2025, 3, 1))[0] == 1
    assert metrics_row(conn, D) == (42, 0, None, Decimal(0), 0)       # untouched
    assert metrics_row(conn, date(2025, 3, 4)) is None                  # never ran
    assert [(r[1], r[2]) for r in ledger(conn)] == [
        (date(2025, 3, 1), "succeeded"), (date(2025, 3, 2), "succeeded"), (D, "failed")]


def test_keep_going_runs_the_later_days_and_still_exits_1(cli, conn):
    conn.execute(FAIL_ON_MARCH_3)
    result = cli("metrics", "--window", "2025-03-01..2025-03-05", "--keep-going", "--json")
    assert result.exit_code == 1
    assert [d["status"] for d in json.loads(result.stdout)["days"]] == [
        "succeeded", "succeeded", "failed", "succeeded", "succeeded"]
    assert metrics_row(conn, date(2025, 3, 5)) is not None


# --- the ledger -------------------------------------------------------------------------------------------

def test_ledger_records_every_attempt_with_its_trigger(cli, conn, monkeypatch):
    insert_events(conn, [("a", "order.placed", utc(2025, 3, 3, 9), {"total": "x"})])
    assert cli("metrics", "--date", "2025-03-03").exit_code == 0
    assert cli("metrics", "--date", "2025-03-03", "--trigger", "cron").exit_code == 0
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2025-03-04T03:00:00+00:00")
    assert cli("aggregate", "--date", "2025-03-03").exit_code == 0

    rows = ledger(conn)
    assert [(r[0], r[2], r[3], r[4]) for r in rows] == [
        ("metrics", "succeeded", "manual", None),
        ("metrics", "succeeded", "cron", None),
        ("aggregate", "succeeded", "airflow", "scheduled__2025-03-04T03:00:00+00:00"),
    ]
    assert rows[0][6]["invalid_order_totals"] == 1
    assert rows[2][5] == 1
    full = conn.execute("SELECT started_at <= finished_at, host <> '', version <> '' FROM job_runs").fetchall()
    assert full == [(True, True, True)] * 3


def test_invalid_trigger_is_a_usage_error(cli):
    result = cli("metrics", "--date", "2025-03-03", "--trigger", "robot")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: Invalid value for '--trigger'")
    assert "'robot' is not one of 'manual', 'airflow', 'cron'" in result.stderr


# --- concurrency and crashes ---------------------------------------------------------------------------

def test_a_held_lock_exits_3_naming_the_running_run(cli, conn, db_url):
    run_id = conn.execute(
        "INSERT INTO job_runs (job, run_date, status, trigger, host, pid, version)"
        " VALUES ('aggregate', %s, 'running', 'airflow', 'worker-7', 4242, 'x') RETURNING id", (D,)).fetchone()[0]
    with connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%(job_key)s, %(unit_key)s)", lock_keys("aggregate", D, None))
        result = cli("aggregate", "--date", "2025-03-03")
        assert result.exit_code == 3
        assert f"aggregate 2025-03-03 is being run by run {run_id} (airflow on worker-7 pid 4242" in result.stderr
        assert cli("aggregate", "--date", "2025-03-04").exit_code == 0   # other days are free
        assert cli("metrics", "--date", "2025-03-03").exit_code == 0     # other jobs too


def _start_slow_run(db_url, *args):
    return subprocess.Popen([sys.executable, "-m", "pulsecart_cli", "metrics", "--date", "2025-03-03", *args],
                            env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_running_row(conn, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.execute("SELECT count(*) FROM job_runs WHERE status = 'running'").fetchone()[0]:
            return
        time.sleep(0.05)
    raise AssertionError("the first run never started")


def test_two_concurrent_runs_of_one_day_one_gets_exit_3(conn, db_url):
    conn.execute(SLOW_METRICS.format(seconds=2))
    insert_events(conn, [("a", "order.placed", utc(2025, 3, 3, 9), {"total": 7})])
    first = _start_slow_run(db_url)
    _wait_for_running_row(conn)
    second = run_pulsecart("metrics", "--date", "2025-03-03", env={"PULSECART_DATABASE_URL": db_url})
    _, first_err = first.communicate(timeout=60)
    assert second.returncode == 3, second.stderr
    assert "metrics 2025-03-03 is being run by run 1 (manual on" in second.stderr
    assert first.returncode == 0, first_err
    assert metrics_row(conn) == (1, 0, None, Decimal(7), 0)
    assert [r[2] for r in ledger(conn)] == ["succeeded"]

    waiter = run_pulsecart("metrics", "--date", "2025-03-03", "--wait", env={"PULSECART_DATABASE_URL": db_url})
    assert waiter.returncode == 0


def test_a_killed_run_leaves_no_partial_day_and_the_next_run_repairs_the_ledger(conn, db_url):
    conn.execute("INSERT INTO daily_metrics VALUES ('2025-03-03', 42, 0, NULL, 0, 0)")
    conn.execute(SLOW_METRICS.format(seconds=1))
    insert_events(conn, [("a", "order.placed", utc(2025, 3, 3, 9), {"total": 7})])
    victim = _start_slow_run(db_url)
    _wait_for_running_row(conn)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert metrics_row(conn) == (42, 0, None, Decimal(0), 0)
    assert [r[2] for r in ledger(conn)] == ["running"]

    conn.execute("DROP TRIGGER slow_metrics ON daily_metrics")
    # The dead run's server session ends once its statement finishes; --wait rides that out.
    again = run_pulsecart("metrics", "--date", "2025-03-03", "--wait", env={"PULSECART_DATABASE_URL": db_url})
    assert again.returncode == 0, again.stderr
    assert metrics_row(conn) == (1, 0, None, Decimal(7), 0)
    rows = ledger(conn)
    assert [r[2] for r in rows] == ["failed", "succeeded"]
    assert rows[0][7] == "abandoned: the process ended without finishing (its lock was free)"


def test_json_output_is_the_only_thing_on_stdout(cli):
    result = cli("aggregate", "--window", "2025-03-01..2025-03-02", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert [d["date"] for d in document["days"]] == ["2025-03-01", "2025-03-02"]
    assert set(document["days"][0]) >= {"date", "status", "rows", "duration_s", "details"}


@pytest.mark.parametrize("text", ["today", "yesterday"])
def test_relative_dates_are_utc(cli, conn, text):
    from datetime import timedelta

    from pulsecart_cli.dates import today_utc
    result = cli("metrics", "--date", text, "--json")
    assert result.exit_code == 0
    expected = today_utc() - timedelta(days=1 if text == "yesterday" else 0)
    assert json.loads(result.stdout)["days"][0]["date"] == expected.isoformat()


def _scans(plan: dict, inside_subplan: str | None = None):
    """(node type, relation, the subplan it sits in) for every node of an EXPLAIN (FORMAT JSON) plan."""
    subplan = plan.get("Subplan Name", inside_subplan)
    yield plan["Node Type"], plan.get("Relation Name"), subplan
    for child in plan.get("Plans", []):
        yield from _scans(child, subplan)


def test_a_first_run_asks_the_key_index_whether_anything_is_stored(conn, db_url):
    """A first run checks once whether its day has stored rows. Asked as a plain EXISTS, the planner
    picks a sequential scan when the statistics say the day is common, and reads the whole table
    when nothing is stored (the nightly run): 120 ms at 12 days of 1M events, growing with the history."""
    seed_events(conn, SeedSpec(date(2025, 3, 1), days=8, users=3000, events_per_day=20000, seed=5))
    days = [date(2025, 3, d) for d in range(1, 9)]
    assert run_daily(db_url, DailyRequest("aggregate", days, Invocation("manual", None))).run.ok
    conn.execute("ANALYZE event_aggregates, personalization_score_history")
    last = days[-1]
    with conn.transaction():  # the statistics still count the day: as after a `forget`, or a dropped day
        conn.execute("SET LOCAL pulsecart.aggregating = 'on'")
        conn.execute("DELETE FROM event_aggregates WHERE date = %s", (last,))
        conn.execute("DELETE FROM personalization_score_history WHERE as_of = %s", (last,))
    with conn.transaction():
        conn.execute(query("aggregate.begin_day"))
        params = {"day": last, "start": utc(2025, 3, 8), "end": utc(2025, 3, 9), "from_previous": True}
        for name, table in (("replace_counts", "event_aggregates"),
                            ("replace_history", "personalization_score_history")):
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + query(f"aggregate.{name}"), params).fetchone()[0]
            checks = [(node, subplan) for node, relation, subplan in _scans(plan[0]["Plan"])
                      if relation == table and subplan and subplan.startswith(("InitPlan", "CTE stored_any"))]
            assert checks and not [c for c in checks if c[0] == "Seq Scan"], (name, checks)
