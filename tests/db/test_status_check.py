"""`pulsecart status --check`: exit 0 when every day succeeded and is fresh, else 5 with one line per
problem day and the command that fixes it (for cron's MAILTO or any monitoring check)."""

import json
from datetime import date

from tests.helpers import FAIL_ON_MARCH_3, insert_events, run_pulsecart, utc

RANGE = ["--end", "2025-03-05", "--days", "5"]


def check(db_url, *args):
    return run_pulsecart("status", "--check", *RANGE, *args, env={"PULSECART_DATABASE_URL": db_url})


def test_a_clean_range_exits_0(cli, db_url):
    assert cli("metrics", "--window", "2025-03-01..2025-03-05").exit_code == 0
    result = check(db_url, "--job", "metrics")
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")     # silent: cron mails what a command prints
    assert json.loads(check(db_url, "--job", "metrics", "--json").stdout) == {
        "ok": True, "start": "2025-03-01", "end": "2025-03-05", "problems": []}


def test_failed_missing_and_stale_days_exit_5_each_with_its_fix(cli, conn, db_url):
    insert_events(conn, [("a", "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2, 3, 4)])
    conn.execute(FAIL_ON_MARCH_3)
    assert cli("metrics", "--window", "2025-03-01..2025-03-04", "--keep-going").exit_code == 1
    insert_events(conn, [("late", "order.placed", utc(2025, 3, 2, 23), {"total": 5})])

    result = check(db_url, "--job", "metrics")

    assert result.returncode == 5
    assert result.stdout.splitlines() == [
        ("metrics 2025-03-02 stale: its events changed after its latest successful run read them; "
        "fix: pulsecart metrics --date 2025-03-02"),
        (f"metrics 2025-03-03 failed: latest run {latest_run(conn, date(2025, 3, 3))} failed; "
        "fix: pulsecart metrics --date 2025-03-03"),
        "metrics 2025-03-05 missing: no successful run; fix: pulsecart metrics --date 2025-03-05",
    ]
    assert result.stderr.splitlines() == ["Error: status --check: 3 problem day(s) in 2025-03-01..2025-03-05"]

    as_json = check(db_url, "--job", "metrics", "--json")
    assert as_json.returncode == 5
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert [(p["date"], p["state"], p["fix"]) for p in document["problems"]] == [
        ("2025-03-02", "stale", "pulsecart metrics --date 2025-03-02"),
        ("2025-03-03", "failed", "pulsecart metrics --date 2025-03-03"),
        ("2025-03-05", "missing", "pulsecart metrics --date 2025-03-05")]


def test_scores_older_than_their_counts_fail_the_check(cli, conn, db_url):
    insert_events(conn, [("a", "product.viewed", utc(2025, 3, d, 12)) for d in range(1, 6)])
    assert cli("aggregate", "--window", "2025-03-01..2025-03-05").exit_code == 0
    conn.execute("UPDATE event_aggregates SET event_count = 9 WHERE date = '2025-03-04'")   # by hand
    result = check(db_url, "--job", "aggregate")
    assert result.returncode == 5
    assert result.stdout.splitlines() == [
        f"aggregate 2025-03-0{d} stale: scores older than the counts of 2025-03-04; "
        f"fix: pulsecart aggregate --date 2025-03-0{d}" for d in (4, 5)]


def latest_run(conn, day):
    return conn.execute("SELECT max(id) FROM job_runs WHERE run_date = %s", (day,)).fetchone()[0]
