"""In a window, day D's scores are carried forward from D-1's (+ D's points, - D-7's) instead of grouping
seven days again. Carried scores must equal the ones a single `--date` run computes from scratch, and
are only carried from scores this window has just written and nobody has changed since."""

import json
from datetime import date, timedelta

from pulsecart_cli.jobs import aggregate_day
from tests.helpers import insert_events, run_pulsecart, utc
from tests.test_jobs import history

FIRST, LAST = date(2025, 3, 1), date(2025, 3, 16)


def day(n: int) -> date:
    return FIRST + timedelta(days=n - 1)


def at(n: int, hour: int = 12):
    return utc(day(n).year, day(n).month, day(n).day, hour)


def all_history(conn):
    rows = conn.execute("SELECT as_of, user_id, score FROM personalization_score_history ORDER BY 1, 2")
    return {(as_of, user): score for as_of, user, score in rows}


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

    conn.execute("DELETE FROM personalization_score_history")
    for n in range(1, 17):
        single = cli("aggregate", "--date", str(day(n)), "--json")
        assert scored_from_previous(single.stdout) == [False]
    assert carried == all_history(conn)
    assert {u for (as_of, u) in carried if as_of == day(8)} == {"dave", "erin", "frank", "gina", "hank"}
    assert (day(10), "gina") not in carried and carried[(day(12), "gina")] == 10
    assert carried[(day(8), "erin")] == 0 and (day(9), "erin") not in carried
    assert carried[(day(9), "dave")] == 1 and carried[(day(8), "frank")] == 3


def test_a_window_skipping_a_day_scores_the_day_after_it_from_scratch(cli, conn):
    insert_events(conn, [("alice", "order.placed", at(n)) for n in range(1, 5)])
    assert cli("aggregate", "--date", str(day(3))).exit_code == 0   # scored before days 1 and 2 were counted
    assert history(conn, day(3)) == {"alice": 10}

    result = cli("aggregate", "--window", f"{day(1)}..{day(4)}", "--only-missing", "--json")

    assert [d["date"] for d in json.loads(result.stdout)["days"]] == [str(day(n)) for n in (1, 2, 4)]
    assert scored_from_previous(result.stdout) == [False, True, False]
    assert history(conn, day(4)) == {"alice": 40}        # carried from day 3's stale score: 10 + 10


def test_scores_are_not_carried_after_another_process_replaced_one_of_the_seven_days(cli, conn, db_url):
    insert_events(conn, [("alice", "product.viewed", at(n)) for n in range(1, 5)])
    window = cli("aggregate", "--window", f"{day(1)}..{day(3)}", "--json")
    day_3_run = json.loads(window.stdout)["days"][2]["run_id"]
    insert_events(conn, [("alice", "order.placed", at(2))])
    replaced = run_pulsecart("aggregate", "--date", str(day(2)), env={"PULSECART_DATABASE_URL": db_url})
    assert replaced.returncode == 0, replaced.stderr
    assert history(conn, day(3)) == {"alice": 3}            # stale now: day 2 holds an order

    with conn.transaction():
        outcome = aggregate_day(conn, day(4), wait_for_previous_day=lambda: day_3_run)

    assert outcome.details["scores_from_previous_day"] is False
    assert history(conn, day(4)) == {"alice": 4 + 10}
