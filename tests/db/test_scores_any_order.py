"""Scores follow their inputs: any set of aggregate runs, in any order and any parallelism, ends exactly
where one serial window over the same days ends, and `status` never calls a stale day done."""

import json
import random
import subprocess
import sys
import threading
import uuid
from datetime import UTC, date, datetime, time, timedelta

import pytest

from pulsecart_cli.dates import days_between, today_utc
from pulsecart_cli.ledger import Invocation
from pulsecart_cli.planning import Selection, choose_days
from pulsecart_cli.runner import DailyRequest, run_daily
from pulsecart_cli.status import day_states
from tests.helpers import SLOW_THEN_FAIL_ON, connect, run_pulsecart

FIRST = date(2025, 3, 1)
ALL_DAYS = days_between(FIRST, FIRST + timedelta(days=20))   # three weeks
USERS = [f"user-{i:02d}" for i in range(30)]
KINDS = ("product.viewed", "cart.item_added", "order.placed", "cart.abandoned")
INVOCATION = Invocation("manual", None)


def random_events(rng: random.Random, days: list[date], per_day: int, users=USERS) -> list[tuple]:
    return [(rng.choice(users), rng.choice(KINDS),
             datetime.combine(day, time(), UTC) + timedelta(seconds=rng.randrange(86_400)))
            for day in days for _ in range(rng.randrange(per_day // 2, per_day + 1))]


def load_events(url: str, rows: list[tuple]) -> None:
    with (connect(url, autocommit=True) as conn, conn.cursor() as cur,
          cur.copy("COPY events (event_id, user_id, event_type, timestamp) FROM STDIN") as copy):
        for user, kind, at in rows:
            copy.write_row((uuid.uuid4(), user, kind, at))


def results(url: str) -> dict:
    """Everything aggregate writes, without timestamps."""
    with connect(url) as conn:
        return {
            "counts": set(conn.execute("SELECT date, user_id, event_type, event_count FROM event_aggregates")),
            "history": set(conn.execute("SELECT as_of, user_id, score FROM personalization_score_history")),
            "current": set(conn.execute("SELECT as_of, user_id, score FROM personalization_scores")),
        }


def serial_window(new_database, events: list[tuple], days: set[date]) -> dict:
    """The reference: the same events, one serial window over the same days."""
    url = new_database()
    load_events(url, events)
    run = run_daily(url, DailyRequest("aggregate", sorted(days), INVOCATION)).run
    assert run.ok
    return results(url)


def differences(actual: dict, expected: dict) -> dict:
    return {name: len(actual[name] ^ expected[name]) for name in actual if actual[name] != expected[name]}


def run_at_once(url: str, runs: list[list[date]], as_processes: set[int]) -> None:
    """Start every run at once, some as `pulsecart aggregate` processes, the rest as threads in this
    process (each on its own connection); all must succeed."""
    failures = []

    def in_thread(days):
        try:
            run = run_daily(url, DailyRequest("aggregate", days, INVOCATION, wait=True)).run
            if not run.ok:
                failures.append([r.error for r in run.results])
        except Exception as exc:   # noqa: BLE001 - reported below, with the run
            failures.append(f"{days}: {exc!r}")

    processes, threads = [], []
    for i, days in enumerate(runs):
        if i in as_processes:
            selector = ["--date", str(days[0])] if len(days) == 1 else ["--window", f"{days[0]}..{days[-1]}"]
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "pulsecart_cli", "aggregate", *selector, "--wait"],
                env={"PULSECART_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        else:
            threads.append(threading.Thread(target=in_thread, args=(days,)))
            threads[-1].start()
    for thread in threads:
        thread.join(timeout=300)
    for process in processes:
        _out, err = process.communicate(timeout=300)
        if process.returncode != 0:
            failures.append(f"exit {process.returncode}: {err}")
    assert not failures


def random_runs(rng: random.Random, must_cover: set[date] = frozenset()) -> list[list[date]]:
    """Single days and windows of 2-7 days anywhere in the three weeks, in random order; together they
    cover ``must_cover``."""
    runs = []
    for _ in range(rng.randrange(3, 7)):
        start = rng.randrange(len(ALL_DAYS))
        length = 1 if rng.random() < 0.5 else rng.randrange(2, 8)
        runs.append(ALL_DAYS[start:start + length])
    for day in must_cover - {d for run in runs for d in run}:
        runs.append([day])
    rng.shuffle(runs)
    return runs


def final_events(url: str) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute('SELECT user_id, event_type, "timestamp" FROM events').fetchall()


def change_events(rng: random.Random, url: str, days: list[date]) -> None:
    """Late events on the first day, deletes on the second, corrections (a view becomes an order, an event
    moves to another day) on the third, each committed in a transaction of its own."""
    late, deleted, corrected = days
    load_events(url, random_events(rng, [late], per_day=10, users=[*USERS, "late-1", "late-2"]))
    pick = ("SELECT event_id FROM events WHERE \"timestamp\" >= %(day)s::timestamptz"
            " AND \"timestamp\" < %(day)s::timestamptz + interval '1 day' ORDER BY event_id OFFSET %(offset)s LIMIT 3")
    with connect(url, autocommit=True) as conn:
        conn.execute(f"DELETE FROM events WHERE event_id IN ({pick})",  # noqa: S608 - constant SQL
                     {"day": f"{deleted}T00:00Z", "offset": rng.randrange(10)})
        conn.execute(f"UPDATE events SET event_type = 'order.placed' WHERE event_id IN ({pick})",  # noqa: S608
                     {"day": f"{corrected}T00:00Z", "offset": rng.randrange(10)})
        conn.execute(f"UPDATE events SET \"timestamp\" = \"timestamp\" + interval '1 day' WHERE event_id IN ({pick})",  # noqa: S608
                     {"day": f"{corrected}T00:00Z", "offset": 20 + rng.randrange(10)})


def reading_an_unrun_day(done: set[date]) -> set[date]:
    """Days run whose scores read a day with events that never ran (from the first day run on): stale."""
    first = min(done)
    return {d for d in done if any(first <= x < d and x not in done for x in days_between(d - timedelta(days=6), d))}


@pytest.mark.parametrize("seed", range(10))
def test_any_runs_in_any_order_end_where_a_serial_window_ends(seed, new_database):
    """Random events over three weeks; random single days and windows run at once (threads and
    processes); then late events, deletes and corrections on random days, and an insert whose transaction
    straddles the next runs; more random runs that include the changed days, and `--stale`. Each stage
    must end exactly where a serial window over the days run so far ends on the events as they are."""
    rng = random.Random(seed)
    url = new_database()
    load_events(url, random_events(rng, ALL_DAYS, per_day=40))

    first = random_runs(rng)
    run_at_once(url, first, as_processes={0})
    done = {d for run in first for d in run}
    assert differences(results(url), serial_window(new_database, final_events(url), done)) == {}, f"seed {seed}"

    changed_days = rng.sample(sorted(done), k=3) if len(done) >= 3 else [*sorted(done)] * 3
    change_events(rng, url, changed_days)
    with connect(url, autocommit=True) as conn:
        stale = {day for day, _ in choose_days(conn, "aggregate", ALL_DAYS, Selection(stale=True))}
    assert set(changed_days) <= stale, f"seed {seed}: status misses changed days"

    straddled = rng.choice(sorted(done))
    with connect(url) as straddler:   # its transaction opens before the runs and commits after them
        straddler.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\")"
                          " VALUES (%s, 'straddler', 'order.placed', %s)",
                          (uuid.uuid4(), datetime.combine(straddled, time(12), UTC)))
        second = random_runs(rng, must_cover=set(changed_days) | {straddled})
        run_at_once(url, second, as_processes={rng.randrange(len(second))})
        straddler.commit()
    done |= {d for run in second for d in run}
    with connect(url, autocommit=True) as conn:
        assert straddled in {day for day, _ in choose_days(conn, "aggregate", ALL_DAYS, Selection(stale=True))}
    report = run_daily(url, DailyRequest("aggregate", ALL_DAYS, INVOCATION, selection=Selection(stale=True)))
    assert report.run is not None and report.run.ok, f"seed {seed}"
    done |= {r.run_date for r in report.run.results if r.run_date}   # --stale also ran never-run days read
    assert differences(results(url), serial_window(new_database, final_events(url), done)) == {}, f"seed {seed}"
    with connect(url, autocommit=True) as conn:
        states = day_states(conn, "aggregate", sorted(done))
    not_fine = {day for day, s in states.items() if s.state not in ("succeeded", "suspect")}   # suspect: a warning
    assert not_fine == reading_an_unrun_day(done), f"seed {seed}"
    assert all("that day was never run" in states[d].stale_reason for d in not_fine)


# --- the scenarios that broke, as regression tests ----------------------------------------------------

WEEK = days_between(date(2025, 3, 1), date(2025, 3, 8))
LATE_DAY = date(2025, 3, 4)


@pytest.fixture
def week(new_database):
    """Eight days of events, aggregated as one window; returns (url, events)."""
    url = new_database()
    events = random_events(random.Random(7), WEEK, per_day=300)
    load_events(url, events)
    assert run_daily(url, DailyRequest("aggregate", WEEK, INVOCATION)).run.ok
    return url, events


def late_orders() -> list[tuple]:
    """200 late orders for 2025-03-04 from 20 users never seen before."""
    rng = random.Random(99)
    return [(f"new-{i % 20:02d}", "order.placed",
             datetime.combine(LATE_DAY, time(), UTC) + timedelta(seconds=rng.randrange(86_400))) for i in range(200)]


def cli_json(url: str, *args) -> dict:
    result = run_pulsecart(*args, "--json", env={"PULSECART_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_late_events_then_stale_rerun_repair_every_later_as_of_day(week, new_database):
    url, events = week
    load_events(url, late_orders())
    events += late_orders()
    status = cli_json(url, "status", "--job", "aggregate", "--end", "2025-03-08", "--days", "8")
    stale = {d["date"]: d["reason"] for d in status["jobs"]["aggregate"]["days"] if d["state"] == "stale"}
    assert list(stale) == [f"2025-03-0{n}" for n in range(4, 9)]    # the late day, and the days that read it
    assert stale["2025-03-04"] == "its events changed after its latest successful run read them"
    assert stale["2025-03-08"] == "reads 2025-03-04: events changed after that day's latest successful run read them"

    run = cli_json(url, "aggregate", "--window", "2025-03-01..2025-03-08", "--stale")

    assert [d["date"] for d in run["days"]] == ["2025-03-04"]
    assert run["days"][0]["details"]["scores_refreshed"] == [f"2025-03-0{n}" for n in range(5, 9)]
    expected = serial_window(new_database, events, set(WEEK))
    assert differences(results(url), expected) == {}
    assert {u for _, u, _ in results(url)["current"]} >= {f"new-{i:02d}" for i in range(20)}
    status = cli_json(url, "status", "--job", "aggregate", "--end", "2025-03-08", "--days", "8")
    assert status["jobs"]["aggregate"]["counts"]["succeeded"] == 8 and status["jobs"]["aggregate"]["fix"] is None


def test_late_events_before_the_range_checked_leave_the_days_that_read_them_stale(week, new_database):
    """The morning check covers the last days only; the late day is older. The days whose scores read
    it (and the current scores) are not fresh: status says so, names the day to rerun, and --stale over
    the checked range reruns that earlier day, which refreshes them."""
    url, events = week
    load_events(url, late_orders())
    events += late_orders()
    check = run_pulsecart("status", "--job", "aggregate", "--end", "2025-03-08", "--days", "2", "--check", "--json",
                          env={"PULSECART_DATABASE_URL": url})
    assert check.returncode == 5, check.stderr
    assert [(p["date"], p["state"], p["fix"]) for p in json.loads(check.stdout)["problems"]] == [
        ("2025-03-07", "stale", "pulsecart aggregate --date 2025-03-04"),
        ("2025-03-08", "stale", "pulsecart aggregate --date 2025-03-04")]
    status = cli_json(url, "status", "--job", "aggregate", "--end", "2025-03-08", "--days", "2")
    assert status["jobs"]["aggregate"]["fix"] == "pulsecart aggregate --window 2025-03-04..2025-03-08 --stale"

    run = cli_json(url, "aggregate", "--window", "2025-03-07..2025-03-08", "--stale")

    assert [(d["date"], d["details"]["scores_refreshed"]) for d in run["days"]] == [
        ("2025-03-04", [f"2025-03-0{n}" for n in range(5, 9)])]
    assert differences(results(url), serial_window(new_database, events, set(WEEK))) == {}
    assert run_pulsecart("status", "--job", "aggregate", "--end", "2025-03-08", "--days", "8", "--check",
                         env={"PULSECART_DATABASE_URL": url}).returncode == 0

def test_a_day_stale_itself_and_through_an_earlier_late_day_gets_one_fix_for_both(week, new_database):
    url, events = week
    late_on_the_8th = [(u, "order.placed", datetime(2025, 3, 8, 12, tzinfo=UTC)) for u in ("new-a", "new-b")]
    for rows in (late_orders(), late_on_the_8th):
        load_events(url, rows)
        events += rows
    check = run_pulsecart("status", "--job", "aggregate", "--end", "2025-03-08", "--days", "1", "--check", "--json",
                          env={"PULSECART_DATABASE_URL": url})
    [problem] = json.loads(check.stdout)["problems"]
    assert problem["reason"] == ("its events changed after its latest successful run read them; reads 2025-03-04: "
                                 "events changed after that day's latest successful run read them")
    assert problem["fix"] == "pulsecart aggregate --window 2025-03-04..2025-03-08 --stale"

    run_pulsecart(*problem["fix"].split()[1:], env={"PULSECART_DATABASE_URL": url})

    assert run_pulsecart("status", "--job", "aggregate", "--end", "2025-03-08", "--days", "8", "--check",
                         env={"PULSECART_DATABASE_URL": url}).returncode == 0
    assert differences(results(url), serial_window(new_database, events, set(WEEK))) == {}

def test_a_single_day_rerun_repairs_the_days_after_it(week, new_database):
    url, events = week
    load_events(url, late_orders())
    events += late_orders()

    run = cli_json(url, "aggregate", "--date", "2025-03-04")

    assert run["days"][0]["details"]["scores_refreshed"] == [f"2025-03-0{n}" for n in range(5, 9)]
    assert run["days"][0]["details"]["current_scores_as_of"] == "2025-03-08"
    assert differences(results(url), serial_window(new_database, events, set(WEEK))) == {}


def test_seven_single_day_processes_at_once_equal_a_serial_window(new_database):
    url = new_database()
    events = random_events(random.Random(3), WEEK, per_day=2_000)
    load_events(url, events)
    processes = [subprocess.Popen([sys.executable, "-m", "pulsecart_cli", "aggregate", "--date", str(day)],
                                  env={"PULSECART_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for day in reversed(WEEK[:7])]
    exits = [p.wait(timeout=120) for p in processes]
    assert exits == [0] * 7, [p.stderr.read() for p in processes]
    assert differences(results(url), serial_window(new_database, events, set(WEEK[:7]))) == {}


@pytest.mark.parametrize("selector", [["--date", "tomorrow"], ["--window", "today..tomorrow"]])
@pytest.mark.parametrize("job", ["aggregate", "metrics"])
def test_a_day_after_today_is_refused(job, selector, db_url):
    tomorrow = str(today_utc() + timedelta(days=1))
    args = [a.replace("tomorrow", tomorrow) for a in selector]
    result = run_pulsecart(job, *args, env={"PULSECART_DATABASE_URL": db_url})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        (f"Error: {args[0]}: {tomorrow} is in the future (today is {today_utc()} UTC); "
        "a day can be processed from the day itself on")]
    with connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM job_runs").fetchone()[0] == 0


def test_current_scores_ignore_a_future_day_written_before_it_was_refused(week, new_database):
    url, _events = week
    with connect(url, autocommit=True) as conn:     # as an earlier pulsecart let a typo do
        conn.execute("INSERT INTO aggregated_days (day, counts_version, scores_from) VALUES ('2052-03-08', 0, 0)")
    assert {as_of for as_of, _, _ in results(url)["current"]} == {date(2025, 3, 8)}


def test_status_marks_the_later_days_of_an_interrupted_window_stale(week, new_database):
    url, events = week
    with connect(url, autocommit=True) as conn:
        conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-06", seconds=0, fail="true"))
    late = [*late_orders(), ("new-on-6", "product.viewed", datetime(2025, 3, 6, 9, tzinfo=UTC))]
    load_events(url, late)
    events += late

    failed = run_pulsecart("aggregate", "--window", "2025-03-04..2025-03-08",
                           env={"PULSECART_DATABASE_URL": url})
    assert failed.returncode == 1

    status = cli_json(url, "status", "--job", "aggregate", "--end", "2025-03-08", "--days", "8")
    states = {d["date"]: (d["state"], d.get("reason")) for d in status["jobs"]["aggregate"]["days"]}
    assert states["2025-03-04"] == ("succeeded", None) and states["2025-03-05"] == ("succeeded", None)
    assert states["2025-03-06"][0] == "failed"
    for later in ("2025-03-07", "2025-03-08"):
        assert states[later] == ("stale", ("scores older than the counts of 2025-03-04; reads 2025-03-06: events "
                                          "changed after that day's latest successful run read them"))
    assert status["jobs"]["aggregate"]["fix"] == "pulsecart aggregate --window 2025-03-06..2025-03-08 --only-failed --stale"

    with connect(url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER slow_day ON event_aggregates")
    fixed = cli_json(url, "aggregate", "--window", "2025-03-01..2025-03-08", "--only-failed", "--stale")
    assert [d["date"] for d in fixed["days"]] == ["2025-03-06", "2025-03-07", "2025-03-08"]
    assert differences(results(url), serial_window(new_database, events, set(WEEK))) == {}


def test_scores_of_unknown_origin_are_stale(week):
    url, _ = week
    with connect(url, autocommit=True) as conn:    # what migration 0005 records for earlier data
        conn.execute("UPDATE aggregated_days SET scores_from = NULL WHERE day = '2025-03-02'")
    status = cli_json(url, "status", "--job", "aggregate", "--end", "2025-03-08", "--days", "8")
    stale = [(d["date"], d["reason"]) for d in status["jobs"]["aggregate"]["days"] if d["state"] == "stale"]
    assert stale == [("2025-03-02", ("scores computed by an earlier pulsecart, by hand, or before a day they "
                                    "read was forgotten: what they were computed from is not known"))]


def test_a_run_waiting_for_another_runs_score_step_says_so_and_then_succeeds(db_url):
    load_events(db_url, random_events(random.Random(5), WEEK[:1], per_day=50))
    with connect(db_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(aggregate_scores_lock_key())")   # another run's score step
        process = subprocess.Popen([sys.executable, "-m", "pulsecart_cli", "aggregate", "--date", str(WEEK[0])],
                                   env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with connect(db_url, autocommit=True) as watcher:
            deadline = datetime.now(UTC) + timedelta(seconds=60)
            while not watcher.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                      ).fetchone()[0]:
                assert datetime.now(UTC) < deadline, "the run never waited for the score step"
        holder.rollback()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert err.splitlines() == [(f"note: aggregate {WEEK[0]}: waiting for another run's score step to commit "
                                "(scores read seven days' counts, so score steps run one at a time)")]


def test_rescoring_a_day_the_statistics_have_not_seen_never_plans_a_nested_loop(new_database):
    """A day written after the last ANALYZE is estimated at one row: a nested loop over the day's slice and
    its diff was quadratic (over 5 minutes instead of 3 s at 100,000 events a day). The aggregate
    transaction plans hash joins instead."""
    from pulsecart_cli.queries import query

    url = new_database()
    load_events(url, random_events(random.Random(11), WEEK, per_day=3_000, users=[f"u{i}" for i in range(2_000)]))
    with connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE personalization_score_history SET (autovacuum_enabled = false)")
        assert run_daily(url, DailyRequest("aggregate", WEEK[-2:], INVOCATION)).run.ok
        conn.execute("ANALYZE personalization_score_history")
        assert run_daily(url, DailyRequest("aggregate", WEEK[2:4], INVOCATION)).run.ok     # not seen by the statistics
        explain = "EXPLAIN " + query("aggregate.replace_history")
        params = {"day": WEEK[3], "from_previous": False}
        with conn.transaction():
            unguarded = "\n".join(r[0] for r in conn.execute(explain, params))
        with conn.transaction():
            conn.execute(query("aggregate.begin_day"))
            guarded = "\n".join(r[0] for r in conn.execute(explain, params))
    assert "Nested Loop" in unguarded      # the trap is real here ...
    assert "Nested Loop" not in guarded    # ... and the aggregate transaction avoids it
