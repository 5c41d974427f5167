"""Scores are never presented as complete while a day they read is incomplete: it has events and never
ran, or its latest run failed. The scenario a simulated day in production found: one order a day for one
user, 11-01 .. 11-10; 11-07 never aggregated; the current score 60 where the truth is 70."""

import json

from tests.helpers import insert_events, utc


def one_order_a_day(conn):
    insert_events(conn, [("u1", "order.placed", utc(2025, 11, d, 10)) for d in range(1, 11)])


def test_a_day_never_aggregated_leaves_the_days_that_read_it_stale(cli, conn):
    one_order_a_day(conn)
    assert cli("aggregate", "--window", "2025-11-01..2025-11-06").exit_code == 0
    ran = [cli("aggregate", "--date", f"2025-11-{d:02d}", "--json") for d in (8, 9, 10)]
    assert all(r.exit_code == 0 for r in ran)
    assert json.loads(ran[-1].stdout)["days"][0]["details"]["scores_read_unaggregated_days"] == ["2025-11-07"]
    assert conn.execute("SELECT score FROM personalization_scores").fetchone() == (60,)

    check = cli("status", "--check", "--job", "aggregate", "--days", "2", "--end", "2025-11-10")
    assert check.exit_code == 5
    assert check.stdout.splitlines() == [
        f"aggregate 2025-11-{d:02d} stale: reads 2025-11-07: that day was never run; fix: pulsecart aggregate --date 2025-11-07"
        for d in (9, 10)]
    week = json.loads(cli("status", "--json", "--job", "aggregate", "--days", "7", "--end", "2025-11-10").stdout)
    assert [d["state"] for d in week["jobs"]["aggregate"]["days"]] == ["succeeded"] * 3 + ["missing"] + ["stale"] * 3

    assert cli("aggregate", "--date", "2025-11-07").exit_code == 0   # the fix it printed: rescores 11-08 .. 11-10
    assert conn.execute("SELECT score FROM personalization_scores").fetchone() == (70,)
    assert cli("status", "--check", "--job", "aggregate", "--days", "10", "--end", "2025-11-10").exit_code == 0


def test_an_input_day_whose_latest_run_failed_is_named_and_healed_by_stale(cli, conn):
    one_order_a_day(conn)
    assert cli("aggregate", "--window", "2025-11-01..2025-11-06").exit_code == 0
    conn.execute("""CREATE FUNCTION fail_nov_7() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION 'injected failure'; END $$""")
    conn.execute("CREATE TRIGGER fail_nov_7 BEFORE INSERT ON event_aggregates FOR EACH ROW"
                 " WHEN (NEW.date = DATE '2025-11-07') EXECUTE FUNCTION fail_nov_7()")
    assert cli("aggregate", "--date", "2025-11-07").exit_code == 1
    conn.execute("DROP TRIGGER fail_nov_7 ON event_aggregates")
    assert cli("aggregate", "--window", "2025-11-08..2025-11-10").exit_code == 0

    check = cli("status", "--check", "--job", "aggregate", "--days", "1", "--end", "2025-11-10")
    assert check.exit_code == 5
    assert check.stdout.splitlines() == [("aggregate 2025-11-10 stale: reads 2025-11-07: that day's latest run failed; "
                                         "fix: pulsecart aggregate --date 2025-11-07")]
    assert cli("aggregate", "--window", "2025-11-10..2025-11-10", "--stale").exit_code == 0   # picks 11-07
    assert conn.execute("SELECT score FROM personalization_scores").fetchone() == (70,)
    assert cli("status", "--check", "--job", "aggregate", "--days", "10", "--end", "2025-11-10").exit_code == 0


def test_days_without_events_before_or_inside_the_history_are_not_incomplete_inputs(cli, conn):
    insert_events(conn, [("u1", "order.placed", utc(2025, 11, d, 10)) for d in (5, 6, 8)])   # nothing on 11-07
    assert cli("aggregate", "--window", "2025-11-05..2025-11-06").exit_code == 0
    assert cli("aggregate", "--date", "2025-11-08").exit_code == 0
    check = cli("status", "--check", "--job", "aggregate", "--days", "4", "--end", "2025-11-08")
    assert check.stdout.splitlines() == [("aggregate 2025-11-07 missing: no successful run; "
                                         "fix: pulsecart aggregate --date 2025-11-07")]
