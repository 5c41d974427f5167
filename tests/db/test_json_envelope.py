"""One --json envelope: every command that takes --json prints exactly one JSON object on stdout, its
first key `ok`, true exactly when the exit code is 0."""

import json

import pytest

from tests.db.test_cli_docs import COMMANDS

DAY = "2025-03-03"
CASES = {  # command: [(argv, exit code)], run in order on one database
    "pulsecart aggregate": [
        (["aggregate", "--date", DAY, "--dry-run"], 0),
        (["aggregate", "--date", DAY], 0),
        (["aggregate", "--date", DAY, "--if-missing"], 0),
        (["aggregate", "--window", f"{DAY}..{DAY}", "--only-failed"], 0),
        (["aggregate", "--window", f"{DAY}..{DAY}", "--via", "airflow"], 0),
    ],
    "pulsecart metrics": [
        (["metrics", "--date", DAY], 0),
        (["metrics", "--date", DAY, "--if-missing"], 0),
        (["metrics", "--window", f"{DAY}..{DAY}", "--dry-run"], 0),
        (["metrics", "--date", DAY, "--via", "airflow", "--dry-run"], 0),
    ],
    "pulsecart status": [
        (["status", "--end", DAY, "--days", "1"], 0),
        (["status", "--end", DAY, "--days", "2", "--check"], 5),
    ],
    "pulsecart runs": [(["runs", "--limit", "2"], 0)],
    "pulsecart forget": [
        (["forget", "metrics", "--date", DAY], 0),
        (["forget", "aggregate", "--window", "2999-01-01..2999-01-02"], 0),
    ],
    "pulsecart quarantine list": [(["quarantine", "list"], 0)],
    "pulsecart quarantine show": [(["quarantine", "show", "{entry}"], 0)],
    "pulsecart reconcile": [(["reconcile", "--topic", "commerce-events", "--dry-run"], 0)],
}


def with_json():
    return sorted(path for path, command in COMMANDS.items()
                  if any("--json" in getattr(param, "opts", ()) for param in command.params))


def test_every_command_with_json_has_cases():
    assert with_json() == sorted(CASES)


def envelope(result, expected_exit: int) -> dict:
    assert result.exit_code == expected_exit, result.output
    document = json.loads(result.stdout)  # one document, nothing before or after it
    assert isinstance(document, dict)
    assert next(iter(document)) == "ok"
    assert document["ok"] is (expected_exit == 0)
    return document


@pytest.fixture
def entry(conn):
    return conn.execute(
        "INSERT INTO dead_letter_quarantine (dead_letter_topic, original_topic, message_id, data, attributes,"
        " reason) VALUES ('pulsecart.commerce-events.dead-letter', 'pulsecart.commerce-events', 'm1', 'not json',"
        " '{}', 'not a JSON object') RETURNING id").fetchone()[0]


def test_each_command_prints_one_envelope(cli, entry, gcp_project):
    assert cli("seed", "--start", "2025-03-02", "--days", "2", "--users", "20", "--events-per-day", "200").exit_code == 0
    assert cli("pubsub", "setup", "--topic", "commerce-events").exit_code == 0
    for path in with_json():
        for argv, code in CASES[path]:
            result = cli(*[a.format(entry=entry) for a in argv], "--json")
            document = envelope(result, code)
            if path in ("pulsecart aggregate", "pulsecart metrics") and "--via" not in argv:
                assert set(document) >= {"ok", "job", "dry_run", "interrupted", "days"}, argv


def test_a_failed_day_is_not_ok(cli, conn):
    conn.execute("CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no'; END $$;"
                 "CREATE TRIGGER fail BEFORE INSERT ON daily_metrics FOR EACH ROW EXECUTE FUNCTION fail()")
    document = envelope(cli("metrics", "--date", DAY, "--json"), 1)
    assert document["interrupted"] is False
    assert [d["status"] for d in document["days"]] == ["failed"]


def test_the_list_commands_wrap_their_rows(cli, entry):
    assert cli("aggregate", "--date", DAY).exit_code == 0
    runs = envelope(cli("runs", "--json"), 0)
    assert list(runs) == ["ok", "runs"] and [r["job"] for r in runs["runs"]] == ["aggregate"]
    listed = envelope(cli("quarantine", "list", "--json"), 0)
    assert list(listed) == ["ok", "entries"] and [e["id"] for e in listed["entries"]] == [entry]


@pytest.mark.parametrize(("argv", "code"), [
    (["aggregate", "--date", "2025-02-30", "--json"], 2),
    (["runs", "--json", "--database-url", "postgresql://nobody@127.0.0.1:1/x"], 1),
])
def test_a_failure_before_any_result_leaves_stdout_empty(cli, argv, code):
    result = cli(*argv)
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
