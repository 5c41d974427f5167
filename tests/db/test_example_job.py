"""A new daily job is its SQL plus one registry entry (docs/development.md, "Adding a job"): a tiny example
job, registered for this test only, gets its command, `forget`, `status --job`, its staleness rule and its
DAG without a line of pulsecart changed."""

import importlib.util
import json
import sys
import types
from datetime import date, timedelta

import pytest
from typer.testing import CliRunner

import pulsecart_cli.cli
from pulsecart_cli import dag_spec, registry
from pulsecart_cli.dates import day_bounds
from pulsecart_cli.jobs import EVENT_CHANGES_SEEN, DayContext
from pulsecart_cli.ledger import RunStatus, WorkOutput
from pulsecart_cli.queries import one_row, parse_named
from tests.helpers import insert_events, utc

# Its SQL, as it would be in sql/queries/example.sql (its table, as a migration would create it, is made below).
SQL = parse_named("""
-- name: replace_day
-- D's events, and its two-day count: its events plus D-1's as recorded (it reads the day before:
-- reads_days_before=1). D+1's two-day count, when recorded, reads D's events: refreshed here, as a job
-- that reads earlier days must do (a rerun of D is what makes D+1 fresh again).
WITH counted AS (
    SELECT count(*) AS events FROM events WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
), written AS (
    INSERT INTO example_counts (day, events, two_days)
    SELECT %(day)s::date, events,
           events + coalesce((SELECT events FROM example_counts WHERE day = %(day)s::date - 1), 0)
    FROM counted
    ON CONFLICT (day) DO UPDATE SET events = EXCLUDED.events, two_days = EXCLUDED.two_days
    RETURNING events, two_days
), refreshed AS (
    UPDATE example_counts later SET two_days = later.events + (SELECT events FROM counted)
    WHERE later.day = %(day)s::date + 1
    RETURNING later.day
)
SELECT written.*, (SELECT count(*) FROM refreshed), (SELECT changes FROM event_changes_between(%(day)s, %(day)s))
FROM written;

-- name: forget_day
WITH removed AS (DELETE FROM example_counts WHERE day = %(day)s RETURNING 1)
SELECT count(*) FROM removed;
""")
NO_CONTEXT = DayContext()
TABLE = "CREATE TABLE example_counts (day date PRIMARY KEY, events bigint NOT NULL, two_days bigint NOT NULL)"


def example_day(conn, day: date, context: DayContext = NO_CONTEXT) -> WorkOutput:
    start, end = day_bounds(day)
    events, two_days, refreshed, changes_seen = one_row(
        conn.execute(SQL["replace_day"], {"day": day, "start": start, "end": end}))
    return WorkOutput(rows=1 + refreshed, details={"events": events, "two_days": two_days, "refreshed": refreshed,
                                                   EVENT_CHANGES_SEEN: changes_seen})


def forget_example_day(conn, day: date, context: DayContext = NO_CONTEXT) -> WorkOutput:
    removed = one_row(conn.execute(SQL["forget_day"], {"day": day}))[0]
    return WorkOutput(rows=removed, status=RunStatus.FORGOTTEN, details={"removed": removed})


EXAMPLE = registry.DailyJob(
    name="example",
    run_day=example_day,
    forget_day=forget_example_day,
    help="""Count a day's events into example_counts, and those of the day and the day before.

    \b
    Examples:
      pulsecart example --date yesterday
    """,
    dag_id="pulsecart_example_counts",
    schedule="30 4 * * *",
    dag=registry.JobDag(
        task_id="count_prior_day_events",
        execution_timeout=timedelta(minutes=10),
        description="Count prior day events",
        tags=("pulsecart", "example"),
        doc="""Every day at 04:30 UTC: count the prior day's events into `example_counts`.""",
        rerun_examples=("pulsecart example --date 2025-03-03",),
    ),
    reads_days_before=1,
    summary=lambda d: f"{d['events']} events, {d['two_days']} over two days",
)


@pytest.fixture
def example(db_url, conn, monkeypatch):
    """The example job in the registry and its table in the database; runs the CLI built from that registry
    in-process (the commands are made when pulsecart_cli/cli.py is executed), as a fresh `pulsecart` would."""
    conn.execute(TABLE)
    monkeypatch.setenv("PULSECART_DATABASE_URL", db_url)
    for name in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    registry.DAILY_JOBS[EXAMPLE.name] = EXAMPLE
    try:
        app = fresh_cli().app
        runner = CliRunner()
        yield lambda *args: runner.invoke(app, list(args))
    finally:
        del registry.DAILY_JOBS[EXAMPLE.name]


def fresh_cli() -> types.ModuleType:
    """pulsecart_cli/cli.py executed anew as a module of its own, so its commands and choices come from the
    registry as it is now. (Not importlib.reload: that would re-run it in the module every other test's
    ``app`` belongs to, swapping the classes its commands compare against.)"""
    name = "pulsecart_cli_cli_with_example"
    spec = importlib.util.spec_from_file_location(name, pulsecart_cli.cli.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def status(invoke, *args):
    result = invoke("status", "--job", "example", "--end", "2025-03-02", "--days", "2", "--json", *args)
    assert result.exit_code == 0, result.output
    return {d["date"]: (d["state"], d.get("reason")) for d in json.loads(result.stdout)["jobs"]["example"]["days"]}


def test_a_job_is_its_sql_and_one_registry_entry(example, conn):
    help_text = example("--help")
    assert help_text.exit_code == 0 and " example " in help_text.stdout
    insert_events(conn, [("a", "product.viewed", utc(2025, 3, 1, 12)), ("b", "order.placed", utc(2025, 3, 2, 9)),
                         ("c", "product.viewed", utc(2025, 3, 2, 10))])

    result = example("example", "--window", "2025-03-01..2025-03-02")

    assert result.exit_code == 0, result.output
    assert "2 events, 3 over two days" in result.stdout
    assert conn.execute("SELECT day, events, two_days FROM example_counts ORDER BY day").fetchall() == [
        (date(2025, 3, 1), 1, 1), (date(2025, 3, 2), 2, 3)]
    assert conn.execute("SELECT job, run_date, status FROM job_runs ORDER BY id").fetchall() == [
        ("example", date(2025, 3, 1), "succeeded"), ("example", date(2025, 3, 2), "succeeded")]
    assert status(example) == {"2025-03-01": ("succeeded", None), "2025-03-02": ("succeeded", None)}

    # Its staleness rule is its registry entry's: a late event on 03-01 leaves 03-02, which reads it, stale too.
    insert_events(conn, [("late", "product.viewed", utc(2025, 3, 1, 23))])
    assert status(example) == {
        "2025-03-01": ("stale", "its events changed after its latest successful run read them"),
        "2025-03-02": ("stale", "reads 2025-03-01: events changed after that day's latest successful run read them")}
    check = example("status", "--check", "--job", "example", "--end", "2025-03-02", "--days", "2")
    assert check.exit_code == 5
    assert check.stdout.splitlines()[-1].startswith("example 2025-03-02 stale: reads 2025-03-01")
    assert check.stdout.splitlines()[-1].endswith("; fix: pulsecart example --date 2025-03-01")

    stale = example("example", "--window", "2025-03-01..2025-03-02", "--stale", "--json")
    assert stale.exit_code == 0, stale.output
    assert [(d["date"], d["details"]["refreshed"]) for d in json.loads(stale.stdout)["days"]] == [("2025-03-01", 1)]
    assert status(example) == {"2025-03-01": ("succeeded", None), "2025-03-02": ("succeeded", None)}
    assert conn.execute("SELECT events, two_days FROM example_counts WHERE day = '2025-03-02'").fetchone() == (2, 4)

    assert example("forget", "example", "--date", "2025-03-02").exit_code == 0
    assert conn.execute("SELECT count(*) FROM example_counts").fetchone() == (1,)
    assert status(example)["2025-03-02"] == ("missing", None)


def test_its_dag_is_generated_from_the_registry_entry(example):
    [dag] = [job for job in dag_spec.spec()["daily_jobs"] if job["job"] == "example"]
    assert dag == {
        "job": "example", "dag_id": "pulsecart_example_counts", "schedule": "30 4 * * *",
        "description": "Count prior day events", "tags": ["pulsecart", "example"],
        "doc_md": "\n# pulsecart_example_counts\n\nEvery day at 04:30 UTC: count the prior day's events into "
                  "`example_counts`.\n",
        "rerun_examples": ["pulsecart example --date 2025-03-03"], "task_id": "count_prior_day_events",
        "execution_timeout_s": 600, "heal_timeout_s": 3600, "after_healing": [], "late_after_hours": 4,
        "late_after": "08:30 UTC"}
    assert [job["job"] for job in dag_spec.spec()["daily_jobs"]] == ["aggregate", "metrics", "example"]
