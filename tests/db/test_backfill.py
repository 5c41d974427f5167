"""Choosing days (missing, failed, stale), dry runs, interruption, cron's --if-missing, check-complete,
status and runs."""

import json
from datetime import date

from pulsecart_cli.dates import days_between
from tests.helpers import (
    FAIL_ON_MARCH_3,
    SLOW_METRICS,
    connect,
    history_begins,
    insert_events,
    interrupt_when_running,
    metrics_row,
    run_pulsecart,
    utc,
)

WINDOW = "2025-03-01..2025-03-05"


def ran_days(result):
    return [d["date"] for d in json.loads(result.stdout)["days"]]


def ledger_count(conn):
    return conn.execute("SELECT count(*) FROM job_runs").fetchone()[0]


def test_default_runs_every_day_oldest_first(cli):
    assert ran_days(cli("metrics", "--window", WINDOW, "--json")) == [
        "2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04", "2025-03-05"]


def test_only_missing_picks_days_without_a_success(cli, conn):
    history_begins(conn)
    assert cli("metrics", "--date", "2025-03-02").exit_code == 0
    conn.execute(FAIL_ON_MARCH_3)
    assert cli("metrics", "--date", "2025-03-03").exit_code == 1   # failed: still missing
    conn.execute("DROP TRIGGER fail_on_march_3 ON daily_metrics")
    result = cli("metrics", "--window", WINDOW, "--only-missing", "--json")
    assert result.exit_code == 0
    assert ran_days(result) == ["2025-03-01", "2025-03-03", "2025-03-04", "2025-03-05"]
    assert ran_days(cli("metrics", "--window", WINDOW, "--only-missing", "--json")) == []


def test_only_failed_picks_days_whose_latest_run_failed(cli, conn):
    conn.execute(FAIL_ON_MARCH_3)
    assert cli("metrics", "--window", WINDOW, "--keep-going").exit_code == 1
    conn.execute("DROP TRIGGER fail_on_march_3 ON daily_metrics")
    result = cli("metrics", "--window", WINDOW, "--only-failed", "--json")
    assert result.exit_code == 0
    assert ran_days(result) == ["2025-03-03"]
    assert ran_days(cli("metrics", "--window", WINDOW, "--only-failed", "--json")) == []


def test_stale_picks_days_with_late_arriving_events(cli, conn):
    insert_events(conn, [("a", "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2, 3)])
    assert cli("metrics", "--window", "2025-03-01..2025-03-03").exit_code == 0
    assert ran_days(cli("metrics", "--window", "2025-03-01..2025-03-03", "--stale", "--json")) == []

    insert_events(conn, [("late", "order.placed", utc(2025, 3, 2, 23, 59), {"total": 5})])   # arrives now
    dry = cli("metrics", "--window", "2025-03-01..2025-03-03", "--stale", "--dry-run")
    assert dry.stdout.splitlines() == ["dry run: metrics would run 1 day(s), oldest first:", "  2025-03-02  stale: its events changed after its latest successful run read them"]
    result = cli("metrics", "--window", "2025-03-01..2025-03-03", "--stale", "--json")
    assert ran_days(result) == ["2025-03-02"]
    assert metrics_row(conn, date(2025, 3, 2))[0] == 2
    assert ran_days(cli("metrics", "--window", "2025-03-01..2025-03-03", "--stale", "--json")) == []


def test_dry_run_changes_nothing(cli, conn):
    insert_events(conn, [("a", "order.placed", utc(2025, 3, 1, 12), {"total": 1})])
    result = cli("aggregate", "--window", WINDOW, "--only-missing", "--dry-run", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    assert [(d["date"], d["reason"]) for d in document["days"]] == [
        (f"2025-03-0{i}", "missing") for i in range(1, 6)]
    assert ledger_count(conn) == 0
    assert conn.execute("SELECT count(*) FROM event_aggregates").fetchone()[0] == 0


def test_window_equals_day_by_day(cli, conn, db_url, new_database):

    from pulsecart_cli.seed import SeedSpec, seed_events

    spec = SeedSpec(date(2025, 2, 20), days=14, users=40, events_per_day=400, seed=3)
    seed_events(conn, spec)
    assert cli("aggregate", "--window", "2025-02-20..2025-03-05").exit_code == 0

    other_url = new_database()
    with connect(other_url, autocommit=True) as other:
        seed_events(other, spec)
    for day in days_between(date(2025, 2, 20), date(2025, 3, 5)):
        assert run_pulsecart("aggregate", "--date", str(day), "--database-url", other_url).returncode == 0

    def snapshot(url):
        with connect(url) as c:
            return (c.execute("SELECT date, user_id, event_type, event_count FROM event_aggregates ORDER BY 1, 2, 3"
                              ).fetchall(),
                    c.execute("SELECT as_of, user_id, score FROM personalization_score_history ORDER BY 1, 2"
                              ).fetchall(),
                    c.execute("SELECT user_id, score, as_of FROM personalization_scores ORDER BY 1").fetchall())

    window_result, daily_result = snapshot(db_url), snapshot(other_url)
    assert window_result == daily_result
    assert len(window_result[1]) > 14 * 30


def test_ctrl_c_rolls_back_the_current_day_and_exits_130(conn, db_url):
    conn.execute("INSERT INTO daily_metrics VALUES ('2025-03-02', 42, 0, NULL, 0, 0)")
    conn.execute(SLOW_METRICS.format(seconds=30))
    result = interrupt_when_running(conn, db_url, "metrics", "--window", "2025-03-02..2025-03-04")
    out, err = result.stdout, result.stderr
    assert result.returncode == 130, err
    assert "interrupted: metrics 2025-03-02 rolled back and marked failed; 2 day(s) not run" in err
    assert "2025-03-02" in out                                           # the summary so far
    assert metrics_row(conn, date(2025, 3, 2)) == (42, 0, None, 0, 0)     # untouched
    assert conn.execute("SELECT status, error FROM job_runs").fetchall() == [("failed", "interrupted")]


def test_if_missing_does_nothing_when_the_day_succeeded(cli, conn):
    first = cli("metrics", "--date", "2025-03-03", "--if-missing", "--trigger", "cron")
    assert first.exit_code == 0
    assert ledger_count(conn) == 1
    second = cli("metrics", "--date", "2025-03-03", "--if-missing", "--trigger", "cron")
    assert second.exit_code == 0
    assert "metrics 2025-03-03 already succeeded (run 1, cron" in second.stderr
    assert ledger_count(conn) == 1
    assert cli("metrics", "--window", WINDOW, "--if-missing").exit_code == 2


def test_check_complete_both_ways(cli, conn):
    insert_events(conn, [("a", "product.viewed", utc(2025, 3, 4, 0, 20))])
    waiting = cli("check-complete", "--date", "2025-03-03", "--grace", "30m")
    assert waiting.exit_code == 4
    assert "newest event 2025-03-04 00:20:00+0000, waiting for one at or after 2025-03-04 00:30:00+0000" \
        in waiting.stdout
    assert cli("check-complete", "--date", "2025-03-03", "--grace", "15m").exit_code == 0
    insert_events(conn, [("a", "product.viewed", utc(2025, 3, 4, 0, 30))])
    assert cli("check-complete", "--date", "2025-03-03").exit_code == 0
    assert cli("check-complete", "--date", "2025-03-03", "--grace", "soon").exit_code == 2


def test_check_complete_on_an_empty_table_waits(cli):
    result = cli("check-complete", "--date", "2025-03-03")
    assert result.exit_code == 4
    assert "newest event none" in result.stdout


def test_status_grid_shows_every_state_and_the_fix(cli, conn):
    history_begins(conn)
    insert_events(conn, [("a", "order.placed", utc(2025, 3, 2, 12), {"total": 1})])
    for day in ("2025-03-01", "2025-03-02"):
        assert cli("metrics", "--date", day).exit_code == 0
    conn.execute(FAIL_ON_MARCH_3)
    assert cli("metrics", "--date", "2025-03-03").exit_code == 1
    conn.execute("INSERT INTO job_runs (job, run_date, status, trigger, host, version)"
                 " VALUES ('metrics', '2025-03-05', 'running', 'airflow', 'w1', 'x')")
    insert_events(conn, [("late", "order.placed", utc(2025, 3, 2, 13), {"total": 1})])

    result = cli("status", "--job", "metrics", "--end", "2025-03-05", "--days", "6", "--json")
    assert result.exit_code == 0
    job = json.loads(result.stdout)["jobs"]["metrics"]
    assert [(d["date"], d["state"]) for d in job["days"]] == [
        ("2025-02-28", "missing"), ("2025-03-01", "succeeded"), ("2025-03-02", "stale"),
        ("2025-03-03", "failed"), ("2025-03-04", "missing"), ("2025-03-05", "running")]
    assert job["counts"] == {"succeeded": 1, "failed": 1, "missing": 2, "stale": 1, "running": 1, "before events": 0,
                             "suspect": 0}
    assert job["fix"] == "pulsecart metrics --window 2025-02-28..2025-03-04 --only-missing --only-failed --stale"

    text = cli("status", "--job", "metrics", "--end", "2025-03-05", "--days", "6")
    assert "·✓~✗·▶" in text.stdout
    assert "pulsecart metrics --window 2025-02-28..2025-03-04 --only-missing --only-failed --stale" in text.stdout


def test_runs_lists_the_ledger_newest_first(cli, conn):
    conn.execute(FAIL_ON_MARCH_3)
    cli("metrics", "--window", "2025-03-02..2025-03-03", "--trigger", "cron")
    result = cli("runs", "--json")
    rows = json.loads(result.stdout)["runs"]
    assert [(r["run_date"], r["status"], r["trigger"]) for r in rows] == [
        ("2025-03-03", "failed", "cron"), ("2025-03-02", "succeeded", "cron")]
    assert rows[0]["error"].startswith("RaiseException: injected failure for 2025-03-03")
    assert all(isinstance(r["duration_s"], float) and r["duration_s"] >= 0 for r in rows)   # a number, not a string
    failed = json.loads(cli("runs", "--status", "failed", "--json").stdout)["runs"]
    assert [r["run_date"] for r in failed] == ["2025-03-03"]
    table = cli("runs")
    assert "injected failure" in table.stdout


def counting_connections(monkeypatch) -> dict[str, int]:
    """Counts the connections the runner opens and the migration checks it makes."""
    from pulsecart_cli import database, runner

    counts = {"connections": 0, "migration_checks": 0}

    def counted(name, real):
        def call(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(database, "connect", counted("connections", database.connect))
    monkeypatch.setattr(runner, "connect", database.connect)
    monkeypatch.setattr(runner, "require_current", counted("migration_checks", runner.require_current))
    return counts


def test_a_run_opens_one_connection_and_checks_the_migrations_once(db_url, conn, monkeypatch):
    history_begins(conn)
    from pulsecart_cli.ledger import Invocation
    from pulsecart_cli.planning import Selection
    from pulsecart_cli.runner import DailyRequest, run_daily

    counts = counting_connections(monkeypatch)
    request = DailyRequest("metrics", [date(2025, 3, 3)], Invocation("manual", None),
                           Selection(only_missing=True), if_missing=True)
    report = run_daily(db_url, request)
    assert report.run is not None and report.run.ok and [d for d, _ in report.plan] == [date(2025, 3, 3)]
    assert counts == {"connections": 1, "migration_checks": 1}
    assert run_daily(db_url, request).already_succeeded is not None
    assert counts == {"connections": 2, "migration_checks": 2}


def test_a_window_of_an_overlapping_job_adds_only_the_second_day_in_flight(db_url, monkeypatch):
    from pulsecart_cli.ledger import Invocation
    from pulsecart_cli.runner import DailyRequest, run_daily

    counts = counting_connections(monkeypatch)
    report = run_daily(db_url, DailyRequest("aggregate", days_between(date(2025, 3, 1), date(2025, 3, 4)),
                                            Invocation("manual", None)))
    assert report.run is not None and report.run.ok and len(report.run.results) == 4
    assert counts == {"connections": 2, "migration_checks": 1}


def test_a_dry_run_without_selectors_needs_no_database(monkeypatch):
    from pulsecart_cli.ledger import Invocation
    from pulsecart_cli.runner import DailyRequest, run_daily

    counts = counting_connections(monkeypatch)
    report = run_daily("postgresql://nobody@127.0.0.1:1/unused",
                       DailyRequest("metrics", [date(2025, 3, 2), date(2025, 3, 1)], Invocation("manual", None),
                                    dry_run=True))
    assert report.plan == [(date(2025, 3, 1), "requested"), (date(2025, 3, 2), "requested")] and report.run is None
    assert counts == {"connections": 0, "migration_checks": 0}
