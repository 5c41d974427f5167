"""`make bench`: pulsecart against the seed's approach and the machine's floor, measured in one run.

Ratios, not absolute times: the machines are shared and noisy. Each figure is the median of several
runs after a warm-up. Results: bench/results/latest.json and a Markdown table on stdout.

    python bench/run.py               # 1,000,000 events a day, 100,000 users, 20,000 dead letters
    python bench/run.py --quick       # 100,000 events a day, for iterating
"""

import argparse
import functools
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pulsecart_cli import adopt, database, emulator, migrations, pubsub
from pulsecart_cli.dates import day_bounds, days_between
from pulsecart_cli.errors import first_line
from pulsecart_cli.ledger import Invocation
from pulsecart_cli.queries import parse_named, query
from pulsecart_cli.reconcile import Options, Reconciler
from pulsecart_cli.registry import DAILY_JOBS
from pulsecart_cli.runner import DailyRequest, run_daily
from pulsecart_cli.seed import EVENT_MIX, SeedSpec, seed_events
from pulsecart_cli.status import completeness, day_states


def connect(url: str, **kwargs) -> psycopg.Connection:
    """Finds pulsecart's tables as its own sessions do (its schema, then public)."""
    return psycopg.connect(url, options=database.libpq_options(), **kwargs)

HERE = Path(__file__).resolve().parent
SQL = parse_named((HERE / "seed_sql" / "aggregate.sql").read_text())
PROFILES = {
    "full": {"events": 1_000_000, "users": 100_000, "messages": 20_000, "repeats": 5, "insert_s": 1.0,
             "insert_pairs": 10, "year_events": 100_000},
    "quick": {"events": 100_000, "users": 10_000, "messages": 2_000, "repeats": 3, "insert_s": 1.0,
              "insert_pairs": 5, "year_events": 10_000},
    "tiny": {"events": 2_000, "users": 200, "messages": 200, "repeats": 1, "insert_s": 0.25, "insert_pairs": 2,
             "year_events": 2_000},
}
D = date(2025, 3, 30)
SEED_LOOP_BACKLOG = 3_000
CONCURRENT_DAYS = 4
INVOCATION = Invocation("manual", None)


def median_time(action, repeats: int, setup=None, warmup: bool = True) -> float:
    """Median wall time of ``action()`` over ``repeats`` runs after one warm-up run."""
    times = []
    for i in range(repeats + (1 if warmup else 0)):
        if setup:
            setup()
        started = time.perf_counter()
        action()
        if i or not warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- databases -------------------------------------------------------------------------------------------

def start_server(home: Path) -> str:
    os.environ["PULSECART_HOME"] = str(home)
    from pulsecart_cli import embedded

    return embedded.start()[0]


def fresh_database(server_url: str, name: str) -> str:
    url = empty_database(server_url, name)
    with connect(url, autocommit=True) as conn:
        migrations.migrate(conn)
        conn.execute(SQL["schema"])
    return url


def seeded_database(server_url: str, name: str, history_days: int, profile: dict) -> tuple[str, float]:
    """A database with ``history_days`` days of events ending on D; returns (url, events per second)."""
    url = fresh_database(server_url, name)
    spec = SeedSpec(D - timedelta(days=history_days - 1), history_days, profile["users"], profile["events"], 42)
    with connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        result = seed_events(conn, spec)
        rate = result.events / (time.perf_counter() - started)
        settle(conn, "VACUUM ANALYZE events")
    return url, rate


def settle(conn, vacuum: str) -> None:
    """Vacuum, then write the dirty pages out now rather than in a checkpoint during the next timing."""
    conn.execute(vacuum)
    conn.execute("CHECKPOINT")


def seed_sql(conn, name: str, run_date: date) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL search_path = seed_bench, public")
        conn.execute(SQL[name], {"run_date": run_date})


def floor_sql(conn, *steps: tuple[str, dict]) -> None:
    """Materialise into temporary tables, then throw them away."""
    conn.execute("BEGIN")
    for name, params in steps:
        conn.execute(SQL[name], params)
    conn.execute("ROLLBACK")


# --- 1. aggregate one day -------------------------------------------------------------------------------------

def bench_aggregate_day(url: str, history_days: int, repeats: int) -> dict:
    start, end = day_bounds(D)
    run_daily(url, DailyRequest("aggregate", days_between(D - timedelta(days=6), D), INVOCATION))
    with connect(url, autocommit=True) as conn:
        for day in days_between(D - timedelta(days=6), D - timedelta(days=1)):
            seed_sql(conn, "extract_events", day + timedelta(days=1))
        settle(conn, "VACUUM ANALYZE")
        rerun = median_time(lambda: run_daily(url, DailyRequest("aggregate", [D], INVOCATION)), repeats)

        def forget_day():
            forget(conn, [D])
            conn.execute("VACUUM event_aggregates, personalization_score_history")

        first = median_time(lambda: run_daily(url, DailyRequest("aggregate", [D], INVOCATION)), repeats, setup=forget_day)
        week_old = D - timedelta(days=6)

        def late_data_for_week_old_day():
            with conn.transaction():   # as if some of its counts had not been there: the rerun changes them
                conn.execute("SET LOCAL pulsecart.aggregating = 'on'")
                conn.execute("DELETE FROM event_aggregates WHERE date = %s AND user_id < 'u000100'", (week_old,))
            conn.execute("VACUUM event_aggregates")

        def rerun_week_old_day():
            run = run_daily(url, DailyRequest("aggregate", [week_old], INVOCATION)).run
            assert len(run.results[0].details["scores_refreshed"]) == 6, run.results[0].details

        week_old_rerun = median_time(rerun_week_old_day, repeats, setup=late_data_for_week_old_day)

        def seed_both():
            seed_sql(conn, "extract_events", D + timedelta(days=1))
            seed_sql(conn, "compute_scores", D + timedelta(days=1))

        seed = median_time(seed_both, repeats)
        floor = median_time(lambda: floor_sql(conn, ("floor_counts", {"start": start, "end": end}),
                                              ("floor_scores", {"day": D})), repeats)
    return {"history_days": history_days, "pulsecart_rerun_s": rerun, "pulsecart_first_run_s": first,
            "pulsecart_week_old_rerun_s": week_old_rerun, "seed_s": seed, "floor_s": floor}


def forget(conn, days: list[date], counts: bool = True) -> None:
    """Make ``days`` never aggregated (``counts=False``: keep their counts, forget their scores)."""
    with conn.transaction():
        conn.execute("SET LOCAL pulsecart.aggregating = 'on'")   # not a change to record: a fresh start
        if counts:
            conn.execute("DELETE FROM event_aggregates WHERE date = ANY(%s)", (days,))
        conn.execute("DELETE FROM personalization_score_history WHERE as_of = ANY(%s)", (days,))
        conn.execute("DELETE FROM aggregated_days WHERE day = ANY(%s)", (days,))


def history_digest(conn) -> str:
    return conn.execute("SELECT md5(string_agg(as_of || ' ' || user_id || ' ' || score, ',' ORDER BY as_of, user_id))"
                        " FROM personalization_score_history").fetchone()[0]


def share_days(days: list[date], workers: list) -> None:
    """Each worker (a function of a day) on its own thread, taking the next day, oldest first, until none is left."""
    pending = list(days)
    guard = threading.Lock()

    def work(on_day):
        while True:
            with guard:
                if not pending:
                    return
                day = pending.pop(0)
            on_day(day)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def concurrent_single_days(url: str, days: list[date], workers: int) -> None:
    """What an Airflow backfill with --max-active-runs N does: N single-day runs at once, oldest first,
    each on its own connection."""
    def run_day(day: date) -> None:
        assert run_daily(url, DailyRequest("aggregate", [day], INVOCATION, wait=True)).run.ok

    share_days(days, [run_day] * workers)


# --- 2. a 30-day window -----------------------------------------------------------------------------------------

BOUND_DAYS = 10


def counts_statement(conn, day: date) -> None:
    """One day's counts statement as a rerun runs it (it compares and writes nothing), rolled back."""
    start, end = day_bounds(day)
    with conn.transaction(force_rollback=True):
        conn.execute(query("aggregate.begin_day"))
        conn.execute(query("aggregate.replace_counts"), {"day": day, "start": start, "end": end})


def counts_on_connections(connections: list, days: list[date]) -> None:
    """The days' counts statements, one thread per connection."""
    share_days(days, [functools.partial(counts_statement, conn) for conn in connections])


def two_in_flight_bound(url: str, days: list[date], repeats: int) -> tuple[float, float]:
    """The same per-day work, one day after another and two at a time, without pulsecart around it: what
    a window's two days in flight can gain over separate days at most, on this machine."""
    with connect(url, autocommit=True) as one, connect(url, autocommit=True) as two:
        serial = median_time(lambda: counts_on_connections([one], days), repeats)
        parallel = median_time(lambda: counts_on_connections([one, two], days), repeats)
    return serial, parallel


def bench_window(url: str, repeats: int) -> dict:
    days = days_between(D - timedelta(days=29), D)
    start, end = day_bounds(days[0])[0], day_bounds(D)[1]
    window = median_time(lambda: run_daily(url, DailyRequest("aggregate", days, INVOCATION)), repeats)

    def separately():
        for day in days:
            run_daily(url, DailyRequest("aggregate", [day], INVOCATION))

    separate = median_time(separately, repeats, warmup=False)
    counts_serial, counts_two_at_a_time = two_in_flight_bound(url, days[-BOUND_DAYS:], repeats)
    with connect(url, autocommit=True) as conn:
        floor = median_time(lambda: floor_sql(
            conn, ("floor_window_counts", {"start": start, "end": end}),
            ("floor_window_scores", {"first": days[0], "last": D})), repeats)

        def forget_scores():
            forget(conn, days, counts=False)
            settle(conn, "VACUUM personalization_score_history, aggregated_days")

        first_window = median_time(lambda: run_daily(url, DailyRequest("aggregate", days, INVOCATION)), repeats,
                                   setup=forget_scores, warmup=False)
        serial_digest = history_digest(conn)
        concurrent = median_time(lambda: concurrent_single_days(url, days, CONCURRENT_DAYS), repeats,
                                 setup=forget_scores, warmup=False)
        if history_digest(conn) != serial_digest:
            raise AssertionError(f"{CONCURRENT_DAYS} concurrent single days differ from the serial window")
    return {"days": len(days), "window_s": window, "separate_days_s": separate, "floor_s": floor,
            "first_window_s": first_window, "concurrent_single_days_s": concurrent, "concurrent_exact": True,
            "counts_one_at_a_time_s": counts_serial, "counts_two_at_a_time_s": counts_two_at_a_time}


# --- 3. metrics one day -----------------------------------------------------------------------------------------

def bench_metrics(url: str, repeats: int) -> dict:
    start, end = day_bounds(D)
    with connect(url, autocommit=True) as conn:
        try:
            seed_sql(conn, "daily_metrics", D + timedelta(days=1))
            seed_error = None
        except psycopg.errors.InvalidTextRepresentation as exc:
            seed_error = first_line(exc)
        conn.execute(SQL["clean_totals"], {"start": start, "end": end})
        settle(conn, "VACUUM ANALYZE events")
        pulsecart = median_time(lambda: run_daily(url, DailyRequest("metrics", [D], INVOCATION)), repeats)
        seed = median_time(lambda: seed_sql(conn, "daily_metrics", D + timedelta(days=1)), repeats)
        floor = median_time(lambda: conn.execute(SQL["floor_metrics"], {"start": start, "end": end}).fetchone(),
                            repeats)
    return {"pulsecart_s": pulsecart, "seed_s": seed, "floor_s": floor, "seed_on_bad_totals": seed_error}


# --- 4. reconcile ---------------------------------------------------------------------------------------------

def publish_backlog(clients, pair, count: int) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    topic = clients.topic_path(pair.dead_letter)
    futures = []
    for i in range(count):
        user = f"u{i % 1000:04d}"
        data = b"not json {" if i % 100 == 0 else json.dumps(
            {"event_type": "order.placed", "event_id": f"e{i}", "user_id": user, "total": 10}).encode()
        futures.append(publisher.publish(topic, data, user_id=user))
    for future in futures:
        future.result(timeout=60)


def seed_loop_corrected(clients, pair) -> None:
    """The seed's loop (pull 500, publish, ack one by one), waiting for each publish so it loses nothing."""
    subscription = clients.subscription_path(pair.reconciler_subscription)
    topic = clients.topic_path(pair.original)
    while True:
        response = _pull(clients, subscription, 500)
        if not response:
            return
        for msg in response:
            try:
                event = json.loads(msg.message.data.decode("utf-8"))
                if event.get("event_type"):
                    clients.publisher.publish(topic, msg.message.data, ordering_key=event.get("user_id", ""),
                                              event_type=event["event_type"], event_id=event.get("event_id", ""),
                                              reconciled="true").result()
                clients.subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [msg.ack_id]})
            except ValueError:
                clients.subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [msg.ack_id]})


def floor_loop(clients, pair, ordered: bool) -> None:
    """Pull, publish with the same ordering keys (or none), batch-ack: no per-message work."""
    subscription = clients.subscription_path(pair.reconciler_subscription)
    topic = clients.topic_path(pair.original)
    while True:
        response = _pull(clients, subscription, 1000)
        if not response:
            return
        futures = [clients.publisher.publish(topic, m.message.data,
                                             ordering_key=m.message.attributes["user_id"] if ordered else "")
                   for m in response]
        for future in futures:
            future.result()
        clients.subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [m.ack_id for m in response]})


def _pull(clients, subscription: str, max_messages: int) -> list:
    from google.api_core import exceptions as gexc

    try:
        return list(clients.subscriber.pull(request={"subscription": subscription, "max_messages": max_messages},
                                            timeout=1, retry=None).received_messages)
    except gexc.DeadlineExceeded:
        return []


def bench_reconcile(url: str, messages: int, repeats: int) -> dict:
    os.environ["PUBSUB_EMULATOR_HOST"] = RUNNING_EMULATOR.host
    clients = pubsub.connect("bench")
    pubsub.setup(clients, [pubsub.TopicPair(t) for t in pubsub.TOPICS])
    pair = pubsub.TopicPair("commerce-events")
    clients.subscriber.delete_subscription(
        request={"subscription": clients.subscription_path(pair.consumer_subscription)})
    results = {}
    with connect(url, autocommit=True) as conn:
        variants = {
            "pulsecart": lambda: Reconciler(clients, conn, pair, Options(max_messages=10**9, pull_timeout_s=1)).run(),
            "seed_corrected": lambda: seed_loop_corrected(clients, pair),
            "floor_ordered": lambda: floor_loop(clients, pair, ordered=True),
            "floor_unordered": lambda: floor_loop(clients, pair, ordered=False),
        }
        for name, action in variants.items():
            # The seed's loop runs at tens of messages a second: a smaller backlog gives the same rate.
            backlog = min(messages, SEED_LOOP_BACKLOG) if name == "seed_corrected" else messages
            log(f"reconcile: {name}, {backlog:,} messages")
            seconds = median_time(action, repeats, setup=lambda backlog=backlog: publish_backlog(clients, pair, backlog))
            results[f"{name}_msgs_per_s"] = backlog / seconds
    results["messages"] = messages
    return results


# --- 5. peak memory of the CLI ------------------------------------------------------------------------------------

# A child forked from this (large) process starts with its resident pages counted in its peak RSS;
# a small intermediary forks the command instead and reports the peak of its child alone.
MEASURE = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL,"
           " stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def peak_rss_mb(url: str, *args: str) -> float:
    result = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "pulsecart_cli", *args],
                            env=os.environ | {"PULSECART_DATABASE_URL": url}, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pulsecart {' '.join(args)} failed")
    return int(result.stdout.strip()) / 1024


def bench_memory(server_url: str, url7: str, url30: str, profile: dict) -> dict:
    scratch = fresh_database(server_url, "bench_memory")
    day = str(D)
    seed_args = ("seed", "--users", str(profile["users"]), "--events-per-day", str(profile["events"] // 10))
    clients, pair = pubsub.connect("bench"), pubsub.TopicPair("commerce-events")  # set up by bench_reconcile

    def reconcile_backlog_mb(backlog: int) -> float:
        publish_backlog(clients, pair, backlog)
        return peak_rss_mb(url30, "reconcile", "--topic", "commerce-events", "--project", "bench",
                           "--pull-timeout", "1")

    return {
        "reconcile_tenth_backlog_mb": reconcile_backlog_mb(profile["messages"] // 10),
        "reconcile_full_backlog_mb": reconcile_backlog_mb(profile["messages"]),
        "seed_1_day_mb": peak_rss_mb(scratch, *seed_args, "--start", "2024-01-01", "--days", "1"),
        "seed_10_days_mb": peak_rss_mb(scratch, *seed_args, "--start", "2024-02-01", "--days", "10"),
        "aggregate_7_days_mb": peak_rss_mb(url7, "aggregate", "--date", day),
        "aggregate_30_days_mb": peak_rss_mb(url30, "aggregate", "--date", day),
        "metrics_7_days_mb": peak_rss_mb(url7, "metrics", "--date", day),
        "metrics_30_days_mb": peak_rss_mb(url30, "metrics", "--date", day),
        "status_mb": peak_rss_mb(url30, "status", "--end", day),
    }


# --- 6. the consumer's inserts, with and without change tracking ----------------------------------------------

WRITERS = 4
BATCH_ROWS = 500
RECENT_DAYS = 3
LATE_SHARE = 0.02  # late events (dead letters republished, a phone back online) among the consumer's rows
ADOPT_DAYS = 3
EVENT_TYPES = tuple(name for name, _ in EVENT_MIX)
INSERT_EVENT = 'INSERT INTO public.events (event_id, user_id, event_type, "timestamp", payload) VALUES '
ONE_ROW = "(%s, %s, %s, %s, %s)"
INSERT_VARIANTS = {
    "single_row": "single-row INSERT, autocommit",
    "multi_row_500": f"{BATCH_ROWS}-row INSERT statement a transaction",
    "executemany_500": f"{BATCH_ROWS} single-row INSERTs a transaction (executemany)",
}
# Every row late, into a day already run: each transaction writes its change row. Reported, no goal.
ALL_LATE = "single_row_all_late"
ALL_LATE_LABEL = "single-row INSERT, autocommit, every row into a day already run"
MEASURED_VARIANTS = {**INSERT_VARIANTS, ALL_LATE: ALL_LATE_LABEL}


class ConsumerRows:
    """Events as the consumer writes them: random ids; timestamps of the last hour of today (UTC), but for
    ``late_share`` of them, late events of the RECENT_DAYS days before, which the nightly runs have read.
    Cheap to make (the client shares the machine's cores with the server), and the same with or without
    change tracking."""

    def __init__(self, seed: int, late_share: float = LATE_SHARE):
        self.rng = random.Random(seed)  # noqa: S311 - test data
        now = datetime.now(UTC)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        recent_us = max(1, min(3_600_000_000, int((now - midnight).total_seconds() * 1_000_000)))
        self.stamps = [(midnight - timedelta(microseconds=1 + self.rng.randrange(RECENT_DAYS * 86_400_000_000))
                        if self.rng.random() < late_share
                        else now - timedelta(microseconds=self.rng.randrange(recent_us))).isoformat()
                       for _ in range(4096)]
        self.i = 0

    def take(self, count: int) -> list[tuple]:
        rows = []
        bits = self.rng.getrandbits
        for _ in range(count):
            self.i += 1
            rows.append((f"{bits(128):032x}", f"u{self.i % 10_007:06d}", EVENT_TYPES[self.i % 4],
                         self.stamps[self.i % 4096], '{"product_id": "p00042"}'))
        return rows


def insert_rows(conn: psycopg.Connection, rows: ConsumerRows, variant: str) -> int:
    """One unit of the consumer's writing (``variant``: a key of INSERT_VARIANTS); returns the rows written."""
    if variant in ("single_row", ALL_LATE):
        conn.execute(INSERT_EVENT + ONE_ROW, rows.take(1)[0])
        return 1
    batch = rows.take(BATCH_ROWS)
    if variant == "multi_row_500":   # autocommit: the statement is its transaction
        conn.execute(INSERT_EVENT + ", ".join([ONE_ROW] * BATCH_ROWS), [v for row in batch for v in row])
    else:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(INSERT_EVENT + ONE_ROW, batch)
    return BATCH_ROWS


def insert_rate(url: str, variant: str, seconds: float) -> float:
    """Rows a second that WRITERS threads, each on its own autocommit connection, write for ``seconds``."""
    connections = [psycopg.connect(url, autocommit=True) for _ in range(WRITERS)]
    counts = [0] * WRITERS
    failures: list[psycopg.Error] = []
    go = threading.Barrier(WRITERS + 1)
    deadline = [0.0]

    def write(i: int) -> None:
        rows = ConsumerRows(i, late_share=1.0 if variant == ALL_LATE else LATE_SHARE)
        go.wait()
        try:
            while time.perf_counter() < deadline[0]:
                counts[i] += insert_rows(connections[i], rows, variant)
        except psycopg.Error as exc:  # re-raised on the main thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    try:
        for thread in threads:
            thread.start()
        deadline[0] = time.perf_counter() + seconds
        started = time.perf_counter()
        go.wait()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            conn.close()
    if failures:
        raise failures[0]
    return sum(counts) / elapsed


def migrated_pair(server_url: str) -> tuple[str, str]:
    """Two fresh databases migrated by pulsecart: change tracking as installed, and the events triggers dropped."""
    urls = []
    for name in ("bench_tracked", "bench_untracked"):
        url = empty_database(server_url, name)
        with database.connection(url) as conn:
            migrations.migrate(conn)
        urls.append(url)
    with psycopg.connect(urls[1], autocommit=True) as conn:
        for trigger in (*adopt.EVENT_TRIGGERS, adopt.TRUNCATE_TRIGGER[0]):
            conn.execute(f"DROP TRIGGER {trigger} ON events")
    with database.connection(urls[0]) as conn:   # as after last night's runs
        conn.execute(query("changes.read_events_through"), {"last_day": datetime.now(UTC).date() - timedelta(days=1)})
    return urls[0], urls[1]


def empty_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return make_conninfo(server_url, dbname=name)


def drop_database(server_url: str, url: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {conninfo_to_dict(url)['dbname']} WITH (FORCE)")


def bench_consumer_inserts(server_url: str, seconds: float, pairs: int) -> dict:
    """Insert throughput of WRITERS concurrent consumer threads into events with pulsecart's change tracking
    and without it (the same migrated database, its events triggers dropped), for each way of writing.
    The machine is shared: the two are measured in ``pairs`` back-to-back pairs of ``seconds`` each (which
    goes first alternates), and the ratio is the median of the pairs' ratios. Each measurement starts from an
    empty, checkpointed events table."""
    tracked, untracked = migrated_pair(server_url)
    results: dict = {"writers": WRITERS, "seconds_each": seconds, "pairs": pairs}
    for variant in MEASURED_VARIANTS:
        rates: dict[str, list[float]] = {"with": [], "without": []}
        for pair in range(pairs):
            order = [("with", tracked), ("without", untracked)]
            for label, url in order if pair % 2 == 0 else reversed(order):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("TRUNCATE events")
                    settle(conn, "VACUUM events")
                rates[label].append(insert_rate(url, variant, seconds))
        pair_ratios = [w / wo for w, wo in zip(rates["with"], rates["without"], strict=True)]
        results[variant] = {"with_rows_per_s": statistics.median(rates["with"]),
                            "without_rows_per_s": statistics.median(rates["without"]),
                            "ratio": statistics.median(pair_ratios), "pair_ratios": pair_ratios,
                            "with_each": rates["with"], "without_each": rates["without"]}
    with connect(tracked, autocommit=True) as conn:   # the triggers did write: one row a transaction and day
        results["change_rows_written"] = conn.execute("SELECT count(*) FROM event_changes").fetchone()[0]
    for url in (tracked, untracked):
        drop_database(server_url, url)
    return results


def seed_database_module():
    """tests/seed_database.py: the database production has (the consumer's events, the seed's tables)."""
    spec = importlib.util.spec_from_file_location("seed_database", HERE.parent / "tests" / "seed_database.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def production_database(server_url: str, name: str, spec: SeedSpec, seed_dag_days: int = 0) -> str:
    """A database built as production has it, without pulsecart, vacuumed and checkpointed."""
    url = empty_database(server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        seed_database_module().build(conn, spec, seed_dag_days=seed_dag_days)
        settle(conn, "VACUUM ANALYZE")
    return url


def bench_inserts_during_migrate(server_url: str, profile: dict) -> dict:
    """The worst single-row insert latency of WRITERS consumer threads (lock_timeout 1 s, as a consumer
    might set it) while `pulsecart db migrate` adopts a database built as production has it (ADOPT_DAYS
    days of events, the seed's DAG run for one), against the worst in the second before the migrate; and
    how many inserts failed."""
    spec = SeedSpec(D - timedelta(days=ADOPT_DAYS - 1), ADOPT_DAYS, profile["users"], profile["events"], 42)
    url = production_database(server_url, "bench_adopt", spec, seed_dag_days=1)
    stop = threading.Event()
    samples: list[list[tuple[float, float, str | None]]] = [[] for _ in range(WRITERS)]  # (start, seconds, error)

    def write(i: int) -> None:
        rows = ConsumerRows(100 + i)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '1s'")
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    insert_rows(conn, rows, "single_row")
                    error = None
                except psycopg.Error as exc:
                    error = first_line(exc)
                samples[i].append((started, time.perf_counter() - started, error))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        before = time.perf_counter()
        time.sleep(1.0)
        migrate_started = time.perf_counter()
        pulsecart_cli(url, "db", "migrate")
        migrate_ended = time.perf_counter()
        time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    every = [s for thread_samples in samples for s in thread_samples]
    during = [s for s in every if migrate_started <= s[0] <= migrate_ended]
    errors = [s[2] for s in every if s[2]]
    drop_database(server_url, url)
    return {"events": spec.days * spec.events_per_day, "migrate_s": migrate_ended - migrate_started,
            "inserts_during_migrate": len(during),
            "worst_insert_during_migrate_ms": max(s[1] for s in during) * 1000,
            "worst_insert_before_migrate_ms": max(s[1] for s in every if before <= s[0] < migrate_started) * 1000,
            "failed_inserts": len(errors), "first_failure": errors[0] if errors else None}


def pulsecart_cli(url: str, *args: str) -> float:
    """Runs `pulsecart ARGS` as a user does (a new process); returns its wall time."""
    return pulsecart_cli_output(url, *args)[0]


def pulsecart_cli_output(url: str, *args: str) -> tuple[float, str]:
    """Runs `pulsecart ARGS` as a user does (a new process); returns its wall time and its stdout."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pulsecart_cli", *args], capture_output=True, text=True,
                            env=os.environ | {"PULSECART_DATABASE_URL": url}, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"pulsecart {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed, result.stdout


# --- 7. status --------------------------------------------------------------------------------------------------

STATUS_BACKLOG = 100_000


def cli_median(url: str, args: tuple[str, ...], repeats: int) -> float:
    return median_time(lambda: pulsecart_cli(url, *args), max(5, repeats))


def status_args(last: date, days: int) -> tuple[str, ...]:
    return ("status", "--json", "--end", str(last), "--days", str(days))


def add_change_backlog(url: str, day: date, rows: int) -> None:
    """Unfolded change rows, as a day of single-row consumer inserts leaves them before the next run folds."""
    with connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO event_changes (day) SELECT %s FROM generate_series(1, %s)", (day, rows))
        conn.execute("VACUUM ANALYZE event_changes")


def bench_status(url: str, repeats: int) -> dict:
    """`pulsecart status --days 30` (the CLI, a new process each time) on the 30-day database after both
    jobs ran over every day; then with STATUS_BACKLOG unfolded change rows for today (outside the window, as
    the consumer leaves them), then as many again for the window's last day. Against the CLI's start-up
    (`pulsecart --version`) and the library call (status.day_states for both jobs) on an open connection."""
    days = days_between(D - timedelta(days=29), D)
    assert run_daily(url, DailyRequest("metrics", days, INVOCATION)).run.ok   # aggregate ran them all in bench_window
    args = status_args(D, len(days))
    results = {"days": len(days), "backlog_rows": STATUS_BACKLOG,
               "cli_startup_s": cli_median(url, ("--version",), repeats), "cli_s": cli_median(url, args, repeats)}
    with connect(url, autocommit=True) as conn:
        results["library_s"] = median_time(lambda: [day_states(conn, job, days) for job in DAILY_JOBS], repeats)
        # check-complete for the day before the last (the last has no event after it): its live count (an
        # index range scan) and the four weeks' recorded counts
        results["check_complete_library_s"] = median_time(lambda: completeness(conn, CHECKED, timedelta(0)), repeats)
    results["check_complete_cli_s"] = cli_median(url, ("check-complete", "--date", str(CHECKED), "--grace", "0m"),
                                                 repeats)
    add_change_backlog(url, datetime.now(UTC).date(), STATUS_BACKLOG)
    results["cli_backlog_today_s"] = cli_median(url, args, repeats)
    add_change_backlog(url, D, STATUS_BACKLOG)
    results["cli_backlog_in_window_s"] = cli_median(url, args, repeats)
    return results


# --- 8. a year of history ---------------------------------------------------------------------------------------

YEAR_DAYS = 365


def bench_year(server_url: str, profile: dict, repeats: int) -> dict:
    """A year of events, built as production has it and adopted by `pulsecart db migrate` (no pulsecart run
    before): the migrate, `status --days 365`, `aggregate` and `metrics` over the year with --only-missing,
    then `status --days 365` again, and once more with STATUS_BACKLOG unfolded change rows for the last day;
    each the CLI in a new process."""
    first = D - timedelta(days=YEAR_DAYS - 1)
    spec = SeedSpec(first, YEAR_DAYS, profile["users"], profile["year_events"], 42)
    started = time.perf_counter()
    url = production_database(server_url, "bench_year", spec)
    results = {"days": YEAR_DAYS, "events_per_day": spec.events_per_day, "build_s": time.perf_counter() - started}
    window = ("--window", f"{first}..{D}", "--only-missing", "--json")
    results["migrate_s"] = pulsecart_cli(url, "db", "migrate")
    results["status_before_runs_s"] = cli_median(url, status_args(D, YEAR_DAYS), repeats)
    for job in DAILY_JOBS:
        seconds, output = pulsecart_cli_output(url, job, *window)
        results[f"{job}_s"] = seconds
        results[f"{job}_days_succeeded"] = sum(d["status"] == "succeeded" for d in json.loads(output)["days"])
    results["status_after_runs_s"] = cli_median(url, status_args(D, YEAR_DAYS), repeats)
    states = json.loads(pulsecart_cli_output(url, *status_args(D, YEAR_DAYS))[1])["jobs"]
    results["status_after_runs_counts"] = {job: states[job]["counts"] for job in states}
    add_change_backlog(url, D, STATUS_BACKLOG)
    results["status_backlog_in_window_s"] = cli_median(url, status_args(D, YEAR_DAYS), repeats)
    with connect(url, autocommit=True) as conn:
        results["database_gb"] = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1e9
    drop_database(server_url, url)
    return results


# --- report -----------------------------------------------------------------------------------------------------

def ratios(r: dict) -> dict:
    a7, a30, w, m, rc = r["aggregate_7"], r["aggregate_30"], r["window"], r["metrics"], r["reconcile"]
    st, yr = r["status"], r["year_of_history"]
    return {
        "aggregate rerun ÷ floor (30 days of history)": a30["pulsecart_rerun_s"] / a30["floor_s"],
        "aggregate first run (the nightly run) ÷ floor (30 days of history)":
            a30["pulsecart_first_run_s"] / a30["floor_s"],
        "rerun of a week-old day, 6 later days rescored ÷ nightly first run (30 days of history)":
            a30["pulsecart_week_old_rerun_s"] / a30["pulsecart_first_run_s"],
        "seed ÷ aggregate rerun (7 days of history)": a7["seed_s"] / a7["pulsecart_rerun_s"],
        "seed ÷ aggregate rerun (30 days of history)": a30["seed_s"] / a30["pulsecart_rerun_s"],
        "aggregate rerun, 30 ÷ 7 days of history": a30["pulsecart_rerun_s"] / a7["pulsecart_rerun_s"],
        "seed, 30 ÷ 7 days of history": a30["seed_s"] / a7["seed_s"],
        "30-day window ÷ 30 separate days": w["window_s"] / w["separate_days_s"],
        f"bound for the line above: {BOUND_DAYS} days' counts statements two at a time ÷ one at a time":
            w["counts_two_at_a_time_s"] / w["counts_one_at_a_time_s"],
        "30-day window ÷ floor": w["window_s"] / w["floor_s"],
        f"30 days as {CONCURRENT_DAYS} concurrent single days ÷ serial window (scores from scratch, exact)":
            w["concurrent_single_days_s"] / w["first_window_s"],
        "metrics ÷ floor": m["pulsecart_s"] / m["floor_s"],
        "seed metrics ÷ metrics": m["seed_s"] / m["pulsecart_s"],
        "reconcile ÷ seed loop (throughput)": rc["pulsecart_msgs_per_s"] / rc["seed_corrected_msgs_per_s"],
        "reconcile ÷ floor with ordering (throughput)": rc["pulsecart_msgs_per_s"] / rc["floor_ordered_msgs_per_s"],
        "floor with ÷ without ordering keys (throughput)":
            rc["floor_ordered_msgs_per_s"] / rc["floor_unordered_msgs_per_s"],
        "aggregate peak memory, 30 ÷ 7 days of history":
            r["memory"]["aggregate_30_days_mb"] / r["memory"]["aggregate_7_days_mb"],
        "seed peak memory, 10 days ÷ 1 day": r["memory"]["seed_10_days_mb"] / r["memory"]["seed_1_day_mb"],
        "reconcile peak memory, whole ÷ a tenth of the backlog":
            r["memory"]["reconcile_full_backlog_mb"] / r["memory"]["reconcile_tenth_backlog_mb"],
        **{insert_ratio_name(label): r["consumer_inserts"][variant]["ratio"]
           for variant, label in MEASURED_VARIANTS.items()},
        "status 30 days ÷ CLI start-up (pulsecart --version)": st["cli_s"] / st["cli_startup_s"],
        f"status 30 days with {STATUS_BACKLOG:,} unfolded change rows for today ÷ without":
            st["cli_backlog_today_s"] / st["cli_s"],
        f"status 30 days with {STATUS_BACKLOG:,} more for the window's last day ÷ without":
            st["cli_backlog_in_window_s"] / st["cli_s"],
        "year: status 365 days after the runs ÷ before": yr["status_after_runs_s"] / yr["status_before_runs_s"],
        "carried-forward score step, never analysed ÷ after ANALYZE": (
            r["scores_without_statistics"]["never_analysed_s"] / r["scores_without_statistics"]["after_analyze_s"]),
    }


def insert_ratio_name(label: str) -> str:
    return f"consumer inserts with ÷ without change tracking: {label} (throughput)"


GOALS = {
    "carried-forward score step, never analysed ÷ after ANALYZE": ("≤", 1.5),
    "aggregate first run (the nightly run) ÷ floor (30 days of history)": ("≤", 1.6),
    "rerun of a week-old day, 6 later days rescored ÷ nightly first run (30 days of history)": ("≤", 3.0),
    "aggregate rerun ÷ floor (30 days of history)": ("≤", 2.0),
    "seed ÷ aggregate rerun (30 days of history)": ("≥", 3.0),
    "aggregate rerun, 30 ÷ 7 days of history": ("≤", 1.2),
    "30-day window ÷ 30 separate days": ("≤", 0.5),
    "reconcile ÷ seed loop (throughput)": ("≥", 3.0),
    "reconcile ÷ floor with ordering (throughput)": ("≥", 0.5),
    "aggregate peak memory, 30 ÷ 7 days of history": ("≤", 1.2),
    "seed peak memory, 10 days ÷ 1 day": ("≤", 1.2),
    "reconcile peak memory, whole ÷ a tenth of the backlog": ("≤", 1.2),
    **{insert_ratio_name(label): ("≥", 0.9) for label in INSERT_VARIANTS.values()},
}
STATUS_GOAL_S = 1.0  # at the full profile
CHECKED = D - timedelta(days=1)
CHECK_COMPLETE_GOAL_S = 0.2  # the check itself (the library call; the CLI adds its start-up), at the full profile


def markdown(results: dict) -> str:
    lines = [(f"pulsecart bench, profile `{results['profile']}` ({results['events_per_day']:,} events/day, "
             f"{results['users']:,} users, {results['reconcile']['messages']:,} dead letters), "
             f"{results['date']}, {results['machine']}"), "",
             "| ratio | value | goal |", "| --- | ---: | --- |"]
    for name, value in results["ratios"].items():
        goal = GOALS.get(name)
        verdict = ""
        if goal:
            met = value <= goal[1] if goal[0] == "≤" else value >= goal[1]
            verdict = f"{goal[0]} {goal[1]:g} {'met' if met else 'MISSED'}"
        lines.append(f"| {name} | {value:.2f} | {verdict} |")
    a7, a30, w, m, rc = (results[k] for k in ("aggregate_7", "aggregate_30", "window", "metrics", "reconcile"))
    lines += ["", "| measurement | seconds (median) |", "| --- | ---: |"]
    for label, section in (("7 days", a7), ("30 days", a30)):
        for key in ("pulsecart_rerun_s", "pulsecart_first_run_s", "pulsecart_week_old_rerun_s", "seed_s", "floor_s"):
            lines.append(f"| aggregate one day, {label} of history: {key.removesuffix('_s')} | {section[key]:.3f} |")
    for key in ("window_s", "separate_days_s", "floor_s", "first_window_s", "concurrent_single_days_s"):
        lines.append(f"| aggregate 30 days: {key.removesuffix('_s')} | {w[key]:.3f} |")
    for key in ("counts_one_at_a_time_s", "counts_two_at_a_time_s"):
        lines.append(f"| aggregate {BOUND_DAYS} days' counts statements: {key.removesuffix('_s')} | {w[key]:.3f} |")
    for key in ("pulsecart_s", "seed_s", "floor_s"):
        lines.append(f"| metrics one day: {key.removesuffix('_s')} | {m[key]:.3f} |")
    lines += ["", "| reconcile throughput | messages/s |", "| --- | ---: |"]
    for key in ("pulsecart", "seed_corrected", "floor_ordered", "floor_unordered"):
        lines.append(f"| {key} | {rc[key + '_msgs_per_s']:,.0f} |")
    lines += ["", f"seed load rate: {results['seed_events_per_s']:,.0f} events/s", "",
              "| command | peak memory (MB) |", "| --- | ---: |"]
    lines += [f"| {k.removesuffix('_mb')} | {v:.0f} |" for k, v in results["memory"].items()]
    lines += ["", *markdown_new_sections(results)]
    if m["seed_on_bad_totals"]:
        lines += ["", (f"The seed's metrics statement as written fails on the seeded bad order totals "
                      f"(`{m['seed_on_bad_totals']}`); it was timed after day D's totals were cleaned.")]
    return "\n".join(lines)


def markdown_new_sections(results: dict) -> list[str]:
    ci, mi, st, yr = (results[k] for k in ("consumer_inserts", "inserts_during_migrate", "status", "year_of_history"))
    lines = [(f"| consumer inserts, {ci['writers']} writers (rows/s, median of {ci['pairs']} pairs of "
              f"{ci['seconds_each']:g} s) | with change tracking | without | with ÷ without (median of the pairs' "
              "ratios) | the pairs' ratios, lowest to highest |"), "| --- | ---: | ---: | ---: | --- |"]
    for variant, label in MEASURED_VARIANTS.items():
        if variant not in ci:   # results of an earlier bench
            continue
        v = ci[variant]
        spread = " ".join(f"{r:.2f}" for r in sorted(v["pair_ratios"]))
        lines.append(f"| {label} | {v['with_rows_per_s']:,.0f} | {v['without_rows_per_s']:,.0f} | {v['ratio']:.2f} "
                     f"| {spread} |")
    lines += ["", (f"While `pulsecart db migrate` adopted a database built as production has it ({mi['events']:,} events, "
                   f"{mi['migrate_s']:.1f} s): worst single-row insert of {WRITERS} consumer threads "
                   f"{mi['worst_insert_during_migrate_ms']:.0f} ms (in the second before: "
                   f"{mi['worst_insert_before_migrate_ms']:.0f} ms), {mi['inserts_during_migrate']:,} inserts, "
                   f"{mi['failed_inserts']} failed" + (f" (`{mi['first_failure']}`)" if mi["first_failure"] else "") + "."),
              "", "| status (the CLI, median) | seconds |", "| --- | ---: |",
              f"| CLI start-up (pulsecart --version) | {st['cli_startup_s']:.3f} |",
              f"| status --days {st['days']}, both jobs run (library call: {st['library_s']:.3f} s) | {st['cli_s']:.3f} |",
              f"| the same with {st['backlog_rows']:,} unfolded change rows for today | {st['cli_backlog_today_s']:.3f} |",
              f"| the same with {st['backlog_rows']:,} more for the window's last day | {st['cli_backlog_in_window_s']:.3f} |"]
    verdict = "met" if max(st["cli_s"], st["cli_backlog_today_s"]) < STATUS_GOAL_S else "MISSED"
    lines += ["", (f"status goal (full profile): under {STATUS_GOAL_S:g} s with and without the backlog for today: "
                   f"{verdict} at this profile.")]
    if "check_complete_library_s" in st:   # measured since 2026-12-05
        check = "met" if st["check_complete_library_s"] < CHECK_COMPLETE_GOAL_S else "MISSED"
        lines.append(f"check-complete --date {CHECKED} (the library call): {st['check_complete_library_s']:.3f} s, goal "
                     f"under {CHECK_COMPLETE_GOAL_S:g} s: {check} at this profile; the CLI: "
                     f"{st['check_complete_cli_s']:.3f} s (start-up {st['cli_startup_s']:.3f} s).")
    lines += ["",
              (f"| a year of history: {yr['days']} days of {yr['events_per_day']:,} events ({yr['database_gb']:.1f} GB) "
               "| seconds | per day (ms) |"), "| --- | ---: | ---: |"]
    for key, label in (("build_s", "built as production has it (COPY, indexes; not pulsecart)"),
                       ("migrate_s", "db migrate (adoption)"), ("status_before_runs_s", "status --days 365, no run yet"),
                       ("aggregate_s", "aggregate --window (the year) --only-missing"),
                       ("metrics_s", "metrics --window (the year) --only-missing"),
                       ("status_after_runs_s", "status --days 365 after both"),
                       ("status_backlog_in_window_s",
                        f"the same with {STATUS_BACKLOG:,} unfolded change rows for the last day")):
        lines.append(f"| {label} | {yr[key]:.2f} | {yr[key] * 1000 / yr['days']:.1f} |")
    lines += ["", (f"Days that succeeded: aggregate {yr['aggregate_days_succeeded']}, metrics {yr['metrics_days_succeeded']}; "
                   f"status after: {json.dumps(yr['status_after_runs_counts'])}.")]
    return lines


RUNNING_EMULATOR = None
RESULTS_MD = HERE / "RESULTS.md"


def results_page(results: dict, source: str) -> str:
    """bench/RESULTS.md: the tables of a results file, as `make bench` last wrote them."""
    return "\n".join([
        "# Benchmark results", "",
        f"Generated by `bench/run.py --render` from `{source}` (`make bench` writes both); do not edit by hand.",
        "What was measured by hand, and why the code is as it is: [NOTES.md](NOTES.md).", "",
        markdown(results), ""])


def main() -> None:
    global RUNNING_EMULATOR
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the same as --profile quick")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--render", action="store_true",
                        help=f"run nothing: write {RESULTS_MD.name} from the results file (--output)")
    args = parser.parse_args()
    if args.render:
        RESULTS_MD.write_text(results_page(json.loads(args.output.read_text()), _shown(args.output)))
        return
    if args.quick:
        args.profile = "quick"
    profile = PROFILES[args.profile]
    repeats = profile["repeats"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up when killed, too
    work = Path(tempfile.mkdtemp(prefix="pulsecart-bench-"))
    server_url = start_server(work)
    RUNNING_EMULATOR = emulator.start(work / "emulator.log")
    try:
        log(f"seeding 7 and 30 days of {profile['events']:,} events ({args.profile})")
        url7, _ = seeded_database(server_url, "bench7", 7, profile)
        url30, seed_rate = seeded_database(server_url, "bench30", 30, profile)
        results = {"profile": args.profile, "events_per_day": profile["events"], "users": profile["users"],
                   "date": time.strftime("%Y-%m-%d"),
                   "machine": f"{os.cpu_count()} cores, {_memory_gib()} GiB, {platform.machine()}",
                   "seed_events_per_s": seed_rate}
        log("aggregate, one day"); results["aggregate_7"] = bench_aggregate_day(url7, 7, repeats)
        results["aggregate_30"] = bench_aggregate_day(url30, 30, repeats)
        log("aggregate, 30-day window"); results["window"] = bench_window(url30, max(1, repeats // 2))
        log("metrics"); results["metrics"] = bench_metrics(url30, repeats)
        results["reconcile"] = bench_reconcile(url30, profile["messages"], max(1, repeats // 2))
        log("peak memory"); results["memory"] = bench_memory(server_url, url7, url30, profile)
        log("status"); results["status"] = bench_status(url30, repeats)
        log("consumer inserts"); results["consumer_inserts"] = bench_consumer_inserts(
            server_url, profile["insert_s"], profile["insert_pairs"])
        log("inserts during db migrate"); results["inserts_during_migrate"] = bench_inserts_during_migrate(
            server_url, profile)
        log(f"a year of history, {profile['year_events']:,} events a day")
        results["year_of_history"] = bench_year(server_url, profile, repeats)
        log("the score step before and after ANALYZE")
        results["scores_without_statistics"] = bench_scores_without_statistics(server_url, profile, repeats)
        results["ratios"] = ratios(results)
    finally:
        RUNNING_EMULATOR.stop()
        from pulsecart_cli import embedded

        embedded.stop()
        shutil.rmtree(work, ignore_errors=True)  # a full run leaves about 11 GB of databases
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.output == HERE / "results" / "latest.json":
        RESULTS_MD.write_text(results_page(results, _shown(args.output)))
    print(markdown(results))


def bench_scores_without_statistics(server_url: str, profile: dict, repeats: int) -> dict:
    """The carried-forward score step (scores as of D from D-1's, + D, - D-7) right after a bulk load, before
    any ANALYZE (autovacuum off on the tables it reads), and the same step after ANALYZE: a plan that
    depends on statistics shows as a ratio well above 1."""
    url = empty_database(server_url, "bench_no_statistics")
    with database.connection(url) as conn:
        migrations.migrate(conn)
        for table in ("event_aggregates", "personalization_score_history", "aggregated_days"):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        seed_events(conn, SeedSpec(D - timedelta(days=8), 9, profile["users"], profile["events"], 11))
    days = days_between(D - timedelta(days=8), D)
    assert run_daily(url, DailyRequest("aggregate", days, INVOCATION)).run.ok

    def carried_forward() -> None:
        with database.connection(url) as conn, conn.transaction(force_rollback=True):
            conn.execute(query("aggregate.begin_day"))
            conn.execute(query("aggregate.replace_history"), {"day": D, "from_previous": True})

    with database.connection(url) as conn:
        analysed = conn.execute("SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('event_aggregates',"
                                " 'personalization_score_history') AND coalesce(last_analyze, last_autoanalyze)"
                                " IS NOT NULL").fetchone()[0]
    without = median_time(carried_forward, repeats)
    with database.connection(url) as conn:
        conn.execute("ANALYZE event_aggregates, personalization_score_history, aggregated_days")
    with_statistics = median_time(carried_forward, repeats)
    return {"never_analysed_s": without, "after_analyze_s": with_statistics, "tables_analysed_before": analysed}


def _shown(path: Path) -> str:
    return str(path.resolve().relative_to(HERE.parent)) if path.resolve().is_relative_to(HERE.parent) else str(path)


def _memory_gib() -> int:
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)


if __name__ == "__main__":
    main()
