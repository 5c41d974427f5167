"""Day D's scores are carried forward from D-1's (+ D's points, - D-7's) instead of grouping seven days
again, whenever D-1's scores are fresh (computed from the counts as they are now, says aggregated_days).
Carried scores must equal the definition: the weighted counts of D-6 .. D."""

import json
from datetime import date, timedelta

from tests.helpers import all_history, history, insert_events, run_pulsecart, scores_by_definition, utc

FIRST, LAST = date(2025, 3, 1), date(2025, 3, 16)


def day(n: int) -> date:
    return FIRST + timedelta(days=n - 1)


def at(n: int, hour: int = 12):
    return utc(day(n).year, day(n).month, day(n).day, hour)


def scored_from_previous(result_stdout: str) -> list[bool]:
    return [d["details"]["scores_from_previous_day"] for d in json.loads(result_stdout)["days"]]


def test_carried_scores_equal_scores_computed_day_by_day(cli, conn):
    insert_events(conn, [
        ("carol", "order.placed", at(1)),                           # leaves every window after day 7
        ("dave", "order.placed", at(1)), ("dave", "product.viewed", at(4)),   # day 1 drops, day 4 stays
        ("erin", "cart.abandoned", at(2)),                          # weight 0: scored 0, still listed
        ("frank", "cart.item_added", at(1)), ("frank", "cart.item_added", at(8)),  # drops and returns at once
        ("gina", "product.viewed", at(3)), ("gina", "order.placed", at(12)),  # gone on 10 and 11, back on 12
        *[("hank", kind, at(n, hour)) for n in range(1, 17) for hour, kind in
          ((9, "product.viewed"), (10, "cart.item_added"), (11, "order.placed"), (12, "cart.abandoned"))
          if (n + hour) % 3],                                       # every day, mixed kinds
    ])

    window = cli("aggregate", "--window", f"{FIRST}..{LAST}", "--json")
    assert window.exit_code == 0, window.output
    assert scored_from_previous(window.stdout) == [False] + [True] * 15
    carried = all_history(conn)
    assert carried == scores_by_definition(conn)

    conn.execute("DELETE FROM aggregated_days")     # nothing is fresh: every day scored from scratch
    for n in range(16, 0, -1):
        single = cli("aggregate", "--date", str(day(n)), "--json")
        assert scored_from_previous(single.stdout) == [False]
    assert carried == all_history(conn)
    assert {u for (as_of, u) in carried if as_of == day(8)} == {"dave", "erin", "frank", "gina", "hank"}
    assert (day(10), "gina") not in carried and carried[(day(12), "gina")] == 10
    assert carried[(day(8), "erin")] == 0 and (day(9), "erin") not in carried
    assert carried[(day(9), "dave")] == 1 and carried[(day(8), "frank")] == 3


def test_a_day_scored_before_the_days_it_reads_is_rescored_when_they_are_counted(cli, conn):
    insert_events(conn, [("alice", "order.placed", at(n)) for n in range(1, 5)])
    assert cli("aggregate", "--date", str(day(3))).exit_code == 0   # scored before days 1 and 2 were counted
    assert history(conn, day(3)) == {"alice": 10}

    result = cli("aggregate", "--window", f"{day(1)}..{day(4)}", "--only-missing", "--json")

    days = json.loads(result.stdout)["days"]
    assert [d["date"] for d in days] == [str(day(n)) for n in (1, 2, 4)]
    assert [d["details"]["scores_refreshed"] for d in days] == [[str(day(3))], [str(day(3))], []]
    assert scored_from_previous(result.stdout) == [False, True, True]
    assert history(conn, day(3)) == {"alice": 30}
    assert history(conn, day(4)) == {"alice": 40}
    assert all_history(conn) == scores_by_definition(conn)


def test_a_rerun_by_another_process_rescores_the_later_days_so_the_next_day_carries_exact_scores(cli, conn, db_url):
    insert_events(conn, [("alice", "product.viewed", at(n)) for n in range(1, 5)])
    assert cli("aggregate", "--window", f"{day(1)}..{day(3)}").exit_code == 0
    insert_events(conn, [("alice", "order.placed", at(2))])
    replaced = run_pulsecart("aggregate", "--date", str(day(2)), "--json", env={"PULSECART_DATABASE_URL": db_url})
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["days"][0]["details"]["scores_refreshed"] == [str(day(3))]
    assert history(conn, day(3)) == {"alice": 3 + 10}

    result = cli("aggregate", "--date", str(day(4)), "--json")
    assert scored_from_previous(result.stdout) == [True]
    assert history(conn, day(4)) == {"alice": 4 + 10}


def test_counts_changed_by_hand_make_the_scores_that_read_them_stale_and_not_carried(cli, conn):
    insert_events(conn, [("alice", "product.viewed", at(n)) for n in range(1, 5)])
    assert cli("aggregate", "--window", f"{day(1)}..{day(3)}").exit_code == 0
    conn.execute("UPDATE event_aggregates SET event_count = 5 WHERE date = %s", (day(2),))

    status = json.loads(cli("status", "--job", "aggregate", "--end", str(day(3)), "--days", "3", "--json").stdout)
    stale = {d["date"]: d["reason"] for d in status["jobs"]["aggregate"]["days"] if d["state"] == "stale"}
    assert stale == {str(day(2)): f"scores older than the counts of {day(2)}",
                     str(day(3)): f"scores older than the counts of {day(2)}"}

    result = cli("aggregate", "--date", str(day(4)), "--json")
    assert scored_from_previous(result.stdout) == [False]             # day 3's scores are not fresh
    assert history(conn, day(4)) == {"alice": 1 + 5 + 1 + 1}          # from the counts as they are

    fixed = cli("aggregate", "--window", f"{day(1)}..{day(4)}", "--stale", "--json")
    days = json.loads(fixed.stdout)["days"]
    assert [d["date"] for d in days] == [str(day(2)), str(day(3))]   # day 4's scores were fresh: it is not run,
    assert days[0]["details"]["scores_refreshed"] == [str(day(4))]     # but day 2's run rescores it
    assert all_history(conn) == scores_by_definition(conn)
    assert history(conn, day(4)) == {"alice": 4}


def test_scores_changed_by_hand_are_stale_and_not_carried(cli, conn):
    insert_events(conn, [("alice", "product.viewed", at(n)) for n in range(1, 5)])
    assert cli("aggregate", "--window", f"{day(1)}..{day(3)}").exit_code == 0
    conn.execute("DELETE FROM personalization_score_history WHERE as_of = %s", (day(3),))

    status = json.loads(cli("status", "--job", "aggregate", "--end", str(day(3)), "--days", "3", "--json").stdout)
    assert [(d["date"], d["state"]) for d in status["jobs"]["aggregate"]["days"]] == [
        (str(day(1)), "succeeded"), (str(day(2)), "succeeded"), (str(day(3)), "stale")]

    result = cli("aggregate", "--date", str(day(4)), "--json")
    assert scored_from_previous(result.stdout) == [False]            # day 3's scores are gone: not carried
    assert history(conn, day(4)) == {"alice": 4}
    assert cli("aggregate", "--window", f"{day(1)}..{day(4)}", "--stale").exit_code == 0
    assert all_history(conn) == scores_by_definition(conn)


def kept_and_written(result_stdout: str) -> list[tuple[bool, int]]:
    return [(d["details"]["scores_kept"], d["details"]["history_written"]) for d in json.loads(result_stdout)["days"]]


def test_a_rerun_on_unchanged_counts_keeps_the_scores_and_a_changed_input_recomputes_them(cli, conn):
    insert_events(conn, [("alice", "product.viewed", at(n)) for n in range(1, 5)] + [("bob", "order.placed", at(3))])
    assert cli("aggregate", "--window", f"{day(1)}..{day(4)}").exit_code == 0

    rerun = cli("aggregate", "--window", f"{day(3)}..{day(4)}", "--json")
    assert kept_and_written(rerun.stdout) == [(True, 0), (True, 0)]
    assert [d["details"]["scored_users"] for d in json.loads(rerun.stdout)["days"]] == [2, 2]
    assert "(kept: already computed from these counts)" in cli("aggregate", "--date", str(day(4))).output

    conn.execute("UPDATE personalization_score_history SET score = 99 WHERE as_of = %s", (day(4),))
    insert_events(conn, [("bob", "cart.item_added", at(3))])       # late: changes day 3's counts
    rerun = cli("aggregate", "--window", f"{day(3)}..{day(4)}", "--json")
    assert kept_and_written(rerun.stdout) == [(False, 1), (False, 2)]
    assert history(conn, day(4)) == {"alice": 4, "bob": 13}
    assert all_history(conn) == scores_by_definition(conn)
