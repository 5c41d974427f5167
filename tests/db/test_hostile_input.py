"""Hostile input: nothing leaks, nothing crashes, nothing poisons a day (issue 14).

Every case runs the real CLI in a child process and checks the same contract: the documented exit
code, exactly one stderr line starting `Error:`, no traceback, and no password (nor any
4-character piece of it) on stdout or stderr.
"""

import json
from datetime import date
from decimal import Decimal

import pytest

from pulsecart_cli import migrations
from tests.helpers import connect, insert_events, run_pulsecart, utc

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


def pieces(password: str) -> set[str]:
    return {password[i:i + 4] for i in range(max(1, len(password) - 3))}


def assert_one_error_line(result, code: int, starts: str, password: str | None = None) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert lines[0].startswith(starts), lines[0]
    assert "Traceback" not in result.stderr
    if password:
        assert_no_password(result, password)


def assert_no_password(result, password: str) -> None:
    shown = result.stdout + result.stderr
    leaked = sorted(piece for piece in pieces(password) if piece in shown)
    assert not leaked, f"pieces of the password in the output: {leaked}\n{shown}"


# (argv, PULSECART_DATABASE_URL, exit code, the Error line starts, the password)
PASSWORD_CASES = {
    "key=value, unknown option": (
        ["aggregate", "--date", "2025-03-01"], "host=127.0.0.1 password=Hx9qZr7Kw bogus=1", 2,
        "Error: malformed database URL 'host=127.0.0.1 password=*** bogus=1': invalid connection option",
        "Hx9qZr7Kw"),
    "key=value, unterminated quote": (
        ["metrics", "--date", "2025-03-01"], "host=127.0.0.1 password='Hx9q Zr7Kw", 2,
        "Error: malformed database URL \"host=127.0.0.1 password='***'\"", "Hx9q Zr7Kw"),
    "key=value, missing =": (
        ["status"], "host=127.0.0.1 password Hx9qZr7Kw", 2,
        "Error: malformed database URL 'host=127.0.0.1 password ***'", "Hx9qZr7Kw"),
    "URI, unencoded @ in the password": (
        ["runs"], "postgresql://pcat2:Tr1cky@Qv0rd9@127.0.0.1:1/pc15", 2,
        "Error: malformed database URL 'postgresql://pcat2:***@127.0.0.1:1/pc15': an unencoded '@'",
        "Tr1cky@Qv0rd9"),
    "URI, bad percent-escape": (
        ["runs"], "postgresql://pcat:Zq7@ss:Xv/rd%Zq@127.0.0.1:1/db", 2,
        "Error: malformed database URL 'postgresql://pcat:***@127.0.0.1:1/db': a '%' that starts no",
        "Zq7@ss:Xv/rd%Zq"),
    "URI, unreachable": (
        ["aggregate", "--date", "2025-03-01"], "postgresql://alice:Hx9qZr7Kw@127.0.0.1:1/pulsecart", 1,
        "Error: cannot connect to the database at postgresql://alice:***@127.0.0.1:1/pulsecart", "Hx9qZr7Kw"),
    "URI, percent-encoded password": (
        ["aggregate", "--date", "2025-03-01"], "postgresql://alice:Hx9q%40Zr%2F7Kw@127.0.0.1:1/pulsecart", 1,
        "Error: cannot connect to the database at postgresql://alice:***@127.0.0.1:1/pulsecart", "Hx9q@Zr/7Kw"),
    "URI, ?password=": (
        ["aggregate", "--date", "2025-03-01"], "postgresql://alice@127.0.0.1:1/pulsecart?password=Hx9qZr7Kw", 1,
        "Error: cannot connect to the database at postgresql://alice@127.0.0.1:1/pulsecart?password=***",
        "Hx9qZr7Kw"),
    "key=value, unreachable, quoted with an escaped quote": (
        ["aggregate", "--date", "2025-03-01"], r"host=127.0.0.1 port=1 password='Hx9q\'Zr7Kw' dbname=x", 1,
        "Error: cannot connect to the database at host=127.0.0.1 port=1 password='***' dbname=x", "Hx9q'Zr7Kw"),
}


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("case", PASSWORD_CASES.values(), ids=PASSWORD_CASES.keys())
def test_a_password_in_the_environment_never_shows(case, debug):
    args, url, code, starts, password = case
    result = run_pulsecart(*(["--debug"] if debug else []), *args, env={"PULSECART_DATABASE_URL": url})
    if debug:
        assert result.returncode == code
        assert "Traceback" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(starts)
        assert_no_password(result, password)
    else:
        assert_one_error_line(result, code, starts, password)


@pytest.mark.parametrize("case", PASSWORD_CASES.values(), ids=PASSWORD_CASES.keys())
def test_a_password_on_the_command_line_never_shows(case):
    args, url, code, starts, password = case
    result = run_pulsecart(*args, "--database-url", url, env={"PULSECART_DATABASE_URL": ""})
    assert_one_error_line(result, code, starts, password)
    joined = run_pulsecart(*args, f"--database-url={url}", env={"PULSECART_DATABASE_URL": ""})
    assert_one_error_line(joined, code, starts, password)


@pytest.mark.parametrize("url", ["postgresql://pcuser:Hx9qZr7Kw@127.0.0.1:1/x", "postgresql://pcuser:ab@127.0.0.1:1/x",
                                 "host=127.0.0.1 password=Hx9qZr7Kw"])
def test_a_url_given_as_an_argument_by_mistake_never_shows(url):
    result = run_pulsecart("db", "migrate", url, env={"PULSECART_DATABASE_URL": UNREACHABLE})
    assert_one_error_line(result, 2, "Error: Got unexpected extra argument", "Hx9qZr7Kw")
    assert "ab@" not in result.stderr
    assert "***" in result.stderr


def test_pgpassword_never_shows():
    result = run_pulsecart("seed", "--start", "2025-03-01", "--days", "0",
                           env={"PULSECART_DATABASE_URL": UNREACHABLE, "PGPASSWORD": "Hx9qZr7Kw"})
    assert_one_error_line(result, 2, "Error: --days must be at least 1", "Hx9qZr7Kw")


# (argv, extra environment, the Error line starts). Every one is exit 2 and writes no ledger row.
BAD_INPUT = {
    "runs --status": (["runs", "--status", "bogus"], {},
                      "Error: Invalid value for '--status': Value error, 'bogus' is not one of 'running', 'succeeded',"),
    "runs --job": (["runs", "--job", "bogus"], {}, "Error: Invalid value for '--job': "),
    "quarantine list --status": (["quarantine", "list", "--status", "bogus"], {},
                                 "Error: Invalid value for '--status': "),
    "status --job": (["status", "--job", "nope"], {}, "Error: Invalid value for '--job': "),
    "--trigger": (["metrics", "--date", "2025-03-01", "--trigger", "robot"], {},
                  "Error: Invalid value for '--trigger': "),
    "runs --limit beyond a bigint": (["runs", "--limit", "99999999999999999999"], {},
                                     "Error: Invalid value for '--limit': "),
    "quarantine show beyond a bigint": (["quarantine", "show", "9223372036854775808"], {},
                                        "Error: Invalid value for 'ID': "),
    "aggregate, year 9999": (["aggregate", "--date", "9999-12-31"], {},
                             "Error: --date 9999-12-31 is out of range: expected a day from 0002-01-01 to 9998-12-31"),
    "metrics, year 1": (["metrics", "--date", "0001-01-01"], {}, "Error: --date 0001-01-01 is out of range"),
    "window into year 9999": (["aggregate", "--window", "9998-12-30..9999-01-01"], {},
                              "Error: --window 9999-01-01 is out of range"),
    "check-complete, year 9999": (["check-complete", "--date", "9999-12-31"], {}, "Error: --date 9999-12-31 is out"),
    "status --end, year 1": (["status", "--end", "0001-01-03"], {}, "Error: --end 0001-01-03 is out of range"),
    "status --days before year 2": (["status", "--end", "0002-01-03", "--days", "10"], {},
                                    "Error: --days 10 from --end 0002-01-03 starts before 0002-01-01"),
    "status --end in the future": (["status", "--check", "--end", "9998-12-31"], {},
                                   "Error: --end: 9998-12-31 is in the future (today is "),
    "seed --start, year 9999": (["seed", "--start", "9999-12-31"], {}, "Error: --start 9999-12-31 is out of range"),
    "seed past the last day": (["seed", "--start", "9998-12-01", "--days", "100"], {},
                               "Error: --days 100 from --start 9998-12-01 runs past 9998-12-31"),
    "--grace overflowing": (["check-complete", "--date", "2025-03-01", "--grace", "99999999999999h"], {},
                            "Error: --grace '99999999999999h' is out of range: expected at most 720h"),
    "--grace of 5,000 digits": (["check-complete", "--date", "2025-03-01", "--grace", "9" * 5000 + "s"], {},
                                "Error: --grace '999"),
    "--publish-timeout infinite": (["reconcile", "--topic", "all", "--publish-timeout", "inf"], {},
                                   "Error: Invalid value for '--publish-timeout': "),
    "invalid date": (["aggregate", "--date", "2025-02-30"], {},
                     "Error: invalid --date '2025-02-30': expected YYYY-MM-DD, 'yesterday', 'today' or 'N days ago'"),
    "PULSECART_HOME is a file": (["runs"], {"PULSECART_HOME": "/etc/hostname", "PULSECART_DATABASE_URL": ""},
                                 "Error: PULSECART_HOME /etc/hostname cannot hold the embedded database"),
    "PULSECART_HOME cannot be made": (["runs"], {"PULSECART_HOME": "/proc/pulsecart", "PULSECART_DATABASE_URL": ""},
                                      "Error: PULSECART_HOME /proc/pulsecart cannot hold the embedded database"),
}


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_exit_2_with_one_line_and_no_ledger_row(case, conn, db_url):
    args, env, starts = case
    result = run_pulsecart(*args, env={"PULSECART_DATABASE_URL": db_url} | env)
    assert_one_error_line(result, 2, starts)
    assert conn.execute("SELECT count(*) FROM job_runs").fetchone()[0] == 0


def test_help_lists_the_accepted_values():
    assert "[manual|airflow|cron]" in run_pulsecart("metrics", "--help").stdout.replace("<", "[").replace(">", "]")
    runs_help = run_pulsecart("runs", "--help").stdout
    assert "running|succeeded|failed" in runs_help and "aggregate|metrics|reconcile" in runs_help


# --- a newer schema ---------------------------------------------------------------------------------------

def _schema_fingerprint(conn):
    return conn.execute(
        "SELECT (SELECT json_agg(m ORDER BY version) FROM schema_migrations m),"
        " (SELECT count(*) FROM job_runs), (SELECT count(*) FROM events),"
        " (SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public')").fetchone()


NEWER_SCHEMA_COMMANDS = [
    ["aggregate", "--date", "2025-03-01"], ["metrics", "--window", "2025-03-01..2025-03-02"],
    ["aggregate", "--window", "2025-03-01..2025-03-03"], ["metrics", "--date", "2025-03-01", "--if-missing"],
    ["aggregate", "--window", "2025-03-01..2025-03-02", "--only-missing"], ["status"], ["runs"],
    ["check-complete", "--date", "2025-03-01"], ["quarantine", "list"], ["quarantine", "show", "1"],
    ["quarantine", "discard", "1", "--reason", "x"],
    ["seed", "--start", "2025-03-01", "--days", "1", "--users", "2", "--events-per-day", "5"],
    ["db", "migrate"], ["db", "status"],
]


def test_every_command_refuses_a_schema_newer_than_it_knows(conn, db_url):
    newer = max(m.version for m in migrations.available()) + 1
    conn.execute("DELETE FROM schema_migrations WHERE version = 1")  # pending too: migrate must still not run
    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_the_future')", (newer,))
    before = _schema_fingerprint(conn)
    for args in NEWER_SCHEMA_COMMANDS:
        result = run_pulsecart(*args, env={"PULSECART_DATABASE_URL": db_url})
        assert result.returncode == 1, (args, result.stderr)
        assert result.stderr.strip().splitlines()[-1] == (
            f"Error: this database was migrated by a newer pulsecart ({newer:04d}_from_the_future): upgrade pulsecart"
        ), args
        assert "Traceback" not in result.stderr
    assert _schema_fingerprint(conn) == before
    listed = run_pulsecart("db", "status", env={"PULSECART_DATABASE_URL": db_url}).stdout
    assert f"{newer:04d}_from_the_future  applied" in listed and "by a newer pulsecart" in listed


def test_a_missing_version_in_the_middle_is_pending_not_newer(empty_db_url):
    """A database migrated by a branch without one of the versions gets it later, out of order."""
    middle = next(m for m in migrations.available() if m.name == "event_change_tracking")
    assert run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url}).returncode == 0
    with connect(empty_db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (middle.version,))
        conn.execute("DROP TABLE event_changes, event_change_totals")
        conn.execute("DROP FUNCTION fold_event_changes(), event_changes_between(date, date)")
        conn.execute("DROP SEQUENCE untracked_event_changes")
        conn.execute("DROP FUNCTION note_event_change(), event_day_key(timestamptz) CASCADE")
    refused = run_pulsecart("runs", env={"PULSECART_DATABASE_URL": empty_db_url})
    assert_one_error_line(refused, 1, f"Error: the database schema is not migrated (pending: {middle.label})")
    result = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"applied {middle.label}", ("added change tracking to public.events "
                                          "(triggers on 1 table(s), run in the writer's transaction)")]


# --- checksums of applied migrations -----------------------------------------------------------------------

def test_checksums_are_stored_and_a_changed_file_is_reported(conn, db_url):
    stored = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    assert stored == {m.version: m.checksum for m in migrations.available()}
    conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    status = run_pulsecart("db", "status", env={"PULSECART_DATABASE_URL": db_url})
    assert status.returncode == 0
    assert "0001_pulsecart_schema  applied" in status.stdout and "(file changed since)" in status.stdout
    assert status.stdout.count("file changed") == 1
    migrate = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": db_url})
    assert migrate.returncode == 0
    assert migrate.stdout.strip() == "schema is up to date"
    assert migrate.stderr.strip() == "warning: 0001_pulsecart_schema.sql changed since it was applied (its checksum differs)"


def test_a_ledger_from_before_checksums_is_upgraded(conn, db_url):
    conn.execute("ALTER TABLE schema_migrations DROP COLUMN checksum")
    status = run_pulsecart("db", "status", env={"PULSECART_DATABASE_URL": db_url})
    assert status.returncode == 0 and "pending" not in status.stdout and "changed" not in status.stdout
    assert run_pulsecart("runs", env={"PULSECART_DATABASE_URL": db_url}).returncode == 0
    migrate = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": db_url})
    assert (migrate.returncode, migrate.stdout.strip(), migrate.stderr) == (0, "schema is up to date", "")
    stored = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    assert stored == {m.version: m.checksum for m in migrations.available()}


# --- metrics never fails because of one event ----------------------------------------------------------------

VALID_TOTALS = [("12.50", Decimal("12.50")), (7, Decimal(7)), ("1e3", Decimal(1000)), ("2.5E-3", Decimal("0.0025")),
                (" -4.5 ", Decimal("-4.5"))]
INVALID_TOTALS = ["1e400000", "1e-400000", "1e131072", "1e131060", "1" * 140_000, "0." + "0" * 17_000 + "1",
                  "NaN", "Infinity", "-inf", "", "12,50", None, True, [1]]


def test_metrics_on_extreme_totals_and_a_100000_percent_day(cli, conn):
    day = date(2025, 3, 3)
    rows = [("a", "order.placed", utc(2025, 3, 3, 1), {"total": total}) for total, _ in VALID_TOTALS]
    rows += [("b", "order.placed", utc(2025, 3, 3, 2), {"total": total}) for total in INVALID_TOTALS]
    rows += [("c", "cart.item_added", utc(2025, 3, 3, 3))]
    rows += [("c", "cart.abandoned", utc(2025, 3, 3, 4))] * 1000
    insert_events(conn, rows)
    revenue = sum(value for _, value in VALID_TOTALS)
    expected = (len(rows) - 1001, 1000, Decimal("100000.00"), revenue, len(INVALID_TOTALS))

    for _ in range(2):  # a rerun too
        result = cli("metrics", "--date", str(day), "--json")
        assert result.exit_code == 0, result.output
        details = json.loads(result.stdout)["days"][0]["details"]
        assert (details["orders_placed"], details["carts_abandoned"], details["abandonment_rate"],
                details["revenue"], details["invalid_order_totals"]) == (
            expected[0], 1000, "100000.00", str(revenue), len(INVALID_TOTALS))
        assert conn.execute(
            "SELECT orders_placed, carts_abandoned, abandonment_rate, revenue, invalid_order_totals"
            " FROM daily_metrics WHERE date = %s", (day,)).fetchone() == expected
    table = cli("metrics", "--date", str(day))
    assert f"{len(INVALID_TOTALS)} invalid order totals (left out of revenue)" in table.stdout


# --- terminal output ----------------------------------------------------------------------------------------

HOSTILE = "\x1b[2J\x1b[31mPWNED\x07\u202e[red]x[/]"
ESCAPED = "\\x1b[2J\\x1b[31mPWNED\\x07\\u202e[red]x[/]"


def test_control_characters_from_data_are_escaped_on_the_terminal_and_exact_in_json(cli, conn):
    entry_id = conn.execute(
        "INSERT INTO dead_letter_quarantine (dead_letter_topic, original_topic, message_id, data, attributes,"
        " ordering_key, reason) VALUES ('pulsecart.commerce-events.dead-letter', 'pulsecart.commerce-events',"
        " %(text)s, %(data)s, %(attributes)s, %(text)s, %(text)s) RETURNING id",
        {"text": HOSTILE, "data": b"line one\r\nline two", "attributes": json.dumps({"k": HOSTILE})},
    ).fetchone()[0]
    shown = cli("quarantine", "show", str(entry_id))
    listed = cli("quarantine", "list")
    for result in (shown, listed):
        assert result.exit_code == 0, result.output
        assert not any(c in result.stdout for c in "\x1b\x07\u202e")
    assert "\\x1b[2J" in listed.stdout and "PWNED" in listed.stdout  # table cells wrap: pieces
    assert f"ordering_key: {ESCAPED}\n" in shown.stdout
    assert f"reason: {ESCAPED}\n" in shown.stdout
    assert "data (text, 18 bytes):\nline one\\r\nline two\n" in shown.stdout  # a CR would hide what it follows
    exact = json.loads(cli("quarantine", "show", str(entry_id), "--json").stdout)
    assert exact["ordering_key"] == exact["reason"] == exact["attributes"]["k"] == HOSTILE
    assert exact["data_text"] == "line one\r\nline two"


def test_an_error_line_escapes_control_characters_and_stays_one_line(cli, conn):
    conn.execute("CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                 " RAISE EXCEPTION E'bad\\x1b[2J\\nsecond line'; END $$;"
                 "CREATE TRIGGER fail BEFORE INSERT ON job_runs FOR EACH ROW EXECUTE FUNCTION fail()")
    result = cli("metrics", "--date", "2025-03-03")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: metrics stopped: database error: bad\\x1b[2J")
    assert "\x1b" not in result.stderr


def test_human_times_are_utc_with_the_offset(cli, conn):
    name = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{name}" SET TimeZone = \'Pacific/Kiritimati\'')
    conn.execute("INSERT INTO job_runs (job, run_date, status, trigger, started_at, finished_at, host, version)"
                 " VALUES ('metrics', '2026-11-26', 'succeeded', 'manual', '2026-11-27 15:42:00+00',"
                 " '2026-11-27 15:42:05+00', 'h', 'v')")
    runs = cli("runs")
    assert runs.exit_code == 0, runs.output
    assert "2026-11-27 15:42:00+0000" in runs.stdout
    assert "2026-11-28" not in runs.stdout
    skipped = cli("metrics", "--date", "2026-11-26", "--if-missing")
    assert "finished 2026-11-27 15:42:05+0000" in skipped.stderr
