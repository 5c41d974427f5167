"""Every committed change to a day's events after its run makes the day stale: an insert whose transaction
straddles the run, a delete, an update of a column a job reads. On a fresh database, on one adopted from the
seed's schema, and on a partitioned events table; and `--stale` repairs what it flags."""

import json
import os
import subprocess
import sys
import time
from datetime import date

import psycopg
import pytest

from pulsecart_cli.seed import SeedSpec
from tests import seed_database
from tests.helpers import connect, insert_events, run_pulsecart, utc

D = date(2025, 3, 3)
WEEK = "2025-03-01..2025-03-07"
SPEC = SeedSpec(date(2025, 3, 1), 7, 40, 200, 3)


@pytest.fixture(params=["fresh", "adopted", "partitioned"])
def week_done(request, new_database):
    """A week of events aggregated and its metrics computed, on each kind of database."""
    if request.param == "fresh":
        url = new_database()
        with connect(url, autocommit=True) as conn:
            from pulsecart_cli.seed import seed_events
            seed_events(conn, SPEC)
    else:
        url = new_database(migrated=False)
        with psycopg.connect(url, autocommit=True) as conn:
            seed_database.build(conn, SPEC, partitioned=request.param == "partitioned")
        assert run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": url}).returncode == 0
    for job in ("aggregate", "metrics"):
        assert run_pulsecart(job, "--window", WEEK, env={"PULSECART_DATABASE_URL": url}).returncode == 0
    assert check(url).returncode == 0
    return url


def check(url: str):
    return run_pulsecart("status", "--check", "--end", "2025-03-07", "--days", "7", env={"PULSECART_DATABASE_URL": url})


def stale_lines(url: str) -> list[str]:
    result = check(url)
    assert result.returncode == 5, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if " stale: " in line]


def metrics(url: str, day: date = D):
    with connect(url) as conn:
        return conn.execute("SELECT orders_placed, revenue FROM daily_metrics WHERE date = %s", (day,)).fetchone()


def repair_and_compare(url: str) -> None:
    """`--stale` reruns what status flagged; afterwards nothing is stale and the results are a fresh run's."""
    for job in ("aggregate", "metrics"):
        assert run_pulsecart(job, "--window", WEEK, "--stale", env={"PULSECART_DATABASE_URL": url}).returncode == 0
    assert check(url).returncode == 0
    with connect(url) as conn:
        wanted = conn.execute("""
            SELECT count(*) FILTER (WHERE event_type = 'order.placed'),
                   coalesce(sum((payload ->> 'total')::numeric) FILTER (WHERE event_type = 'order.placed'
                                AND payload ->> 'total' ~ '^[0-9]+(\\.[0-9]+)?$'), 0)
            FROM events WHERE "timestamp" >= '2025-03-03T00:00Z' AND "timestamp" < '2025-03-04T00:00Z'""").fetchone()
        assert metrics(url) == wanted
        by_definition = conn.execute("""
            SELECT user_id, sum(event_count * event_weight(event_type)) FROM event_aggregates
            WHERE date BETWEEN '2025-03-01' AND '2025-03-07' GROUP BY 1 HAVING true ORDER BY 1""").fetchall()
        assert conn.execute("SELECT user_id, score FROM personalization_score_history WHERE as_of = '2025-03-07'"
                            " ORDER BY 1").fetchall() == [(u, s) for u, s in by_definition]


def test_an_insert_whose_transaction_straddles_the_run_makes_the_day_stale(week_done):
    url = week_done
    with psycopg.connect(url) as consumer:   # the consumer's transaction opens before the runs
        consumer.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\", payload)"
                         " VALUES (gen_random_uuid(), 'straddler', 'order.placed', %s, '{\"total\": \"12.50\"}')",
                         (utc(2025, 3, 3, 12),))
        for job in ("aggregate", "metrics"):
            result = run_pulsecart(job, "--date", str(D), env={"PULSECART_DATABASE_URL": url})
            assert result.returncode == 0
            assert "a transaction writing events stayed open over 2 s after the run began" in result.stderr
        # the runs waited for the open transaction, then gave up: it may hold rows of D, so D is stale already
        assert any(line.startswith("metrics 2025-03-03 stale:") for line in stale_lines(url))
        consumer.commit()
    lines = stale_lines(url)
    assert "metrics 2025-03-03 stale: its events changed after its latest successful run read them; " \
           "fix: pulsecart metrics --date 2025-03-03" in lines
    assert any(line.startswith("aggregate 2025-03-03 stale:") for line in lines)
    assert any(line.startswith("aggregate 2025-03-07 stale: reads 2025-03-03") for line in lines)
    repair_and_compare(url)
    with connect(url) as conn:
        assert conn.execute("SELECT score FROM personalization_scores WHERE user_id = 'straddler'").fetchone() == (10,)


def test_an_insert_into_a_day_no_run_has_read_writes_no_change_row_until_a_run_reads_it(week_done):
    """The consumer's inserts are almost all of today: the insert trigger notes nothing for a day after the
    latest day any run has read (2025-03-07 here), and notes once a run of that day has begun."""
    url = week_done
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT fold_event_changes()")
        insert_events(conn, [("new", "order.placed", utc(2025, 3, 8, 0)), ("new", "order.placed", utc(2025, 3, 9, 23))])
        assert conn.execute("SELECT count(*) FROM event_changes").fetchone()[0] == 0
        insert_events(conn, [("late", "order.placed", utc(2025, 3, 7, 23))])
        assert conn.execute("SELECT day FROM event_changes").fetchall() == [(date(2025, 3, 7),)]
    assert run_pulsecart("metrics", "--date", "2025-03-08", env={"PULSECART_DATABASE_URL": url}).returncode == 0
    with connect(url, autocommit=True) as conn:
        insert_events(conn, [("later", "order.placed", utc(2025, 3, 8, 12)), ("later", "order.placed", utc(2025, 3, 9, 1))])
        assert conn.execute("SELECT day FROM event_changes WHERE day > '2025-03-07'").fetchall() == [(date(2025, 3, 8),)]
    assert metrics_stale_on(url, date(2025, 3, 8))


def metrics_stale_on(url: str, day: date) -> bool:
    result = run_pulsecart("status", "--check", "--job", "metrics", "--end", str(day), "--days", "1",
                           env={"PULSECART_DATABASE_URL": url})
    return f"metrics {day} stale:" in result.stdout


def test_a_run_waits_for_an_insert_into_its_unread_day_made_before_it_began(week_done):
    """An insert into a day no run had read notes nothing, and its transaction keeps the read-through day it
    read for its later inserts; a run of that day begun before the commit waits for it (up to 2 s), then
    sees all its rows: right, and not stale."""
    url, day = week_done, date(2025, 3, 8)
    with psycopg.connect(url) as consumer:
        consumer.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\", payload)"
                         " VALUES (gen_random_uuid(), 'early', 'order.placed', %s, '{\"total\": \"5\"}')",
                         (utc(2025, 3, 8, 9),))
        run = subprocess.Popen([sys.executable, "-m", "pulsecart_cli", "metrics", "--date", str(day)], stdout=subprocess.PIPE,
                               text=True, env=os.environ | {"PULSECART_DATABASE_URL": url})
        time.sleep(0.7)   # the run has raised the read-through day by now: this transaction read it before
        consumer.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\", payload)"
                         " VALUES (gen_random_uuid(), 'early', 'order.placed', %s, '{\"total\": \"5\"}')",
                         (utc(2025, 3, 8, 10),))
        consumer.commit()
        out, _ = run.communicate(timeout=60)
    assert run.returncode == 0, out
    assert "stayed open" not in out
    assert metrics(url, day) == (2, 10)
    assert not metrics_stale_on(url, day)


def test_a_transaction_open_through_the_run_leaves_its_unread_day_stale_until_a_run_after_it(week_done):
    """The same insert, its transaction open past the run's wait: the run marks the day stale (it may hold
    rows the run did not see), and a run after the commit repairs it."""
    url, day = week_done, date(2025, 3, 8)
    with psycopg.connect(url) as consumer:
        consumer.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\", payload)"
                         " VALUES (gen_random_uuid(), 'slow', 'order.placed', %s, '{\"total\": \"5\"}')",
                         (utc(2025, 3, 8, 9),))
        result = run_pulsecart("metrics", "--date", str(day), env={"PULSECART_DATABASE_URL": url})
        assert result.returncode == 0 and "stayed open over 2 s" in result.stderr
        assert metrics(url, day) == (0, 0)
        consumer.commit()
    assert metrics_stale_on(url, day)
    assert run_pulsecart("metrics", "--date", str(day), "--stale", env={"PULSECART_DATABASE_URL": url}).returncode == 0
    assert metrics(url, day) == (1, 5)
    assert not metrics_stale_on(url, day)


def test_a_writer_of_a_partition_of_a_partition_added_after_migrate_is_waited_for(new_database):
    """An insert straight into a second-level partition (which `db migrate` refuses, but the consumer may add
    later) locks only that partition for writing: the run must still find its transaction and wait for it."""
    url = new_database(migrated=False)
    with psycopg.connect(url, autocommit=True) as conn:
        seed_database.build(conn, SPEC, partitioned=True)
    env = {"PULSECART_DATABASE_URL": url}
    assert run_pulsecart("db", "migrate", env=env).returncode == 0
    assert run_pulsecart("metrics", "--window", WEEK, env=env).returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events_202504_late PARTITION OF events FOR VALUES FROM ('2025-04-01T00:00Z')"
                     " TO ('2025-04-08T00:00Z') PARTITION BY RANGE (\"timestamp\")")
        conn.execute("CREATE TABLE events_20250401 PARTITION OF events_202504_late FOR VALUES FROM"
                     " ('2025-04-01T00:00Z') TO ('2025-04-02T00:00Z')")
    day = date(2025, 4, 1)
    with psycopg.connect(url) as consumer:
        consumer.execute("INSERT INTO events_20250401 (event_id, user_id, event_type, \"timestamp\", payload)"
                         " VALUES (gen_random_uuid(), 'leaf', 'order.placed', '2025-04-01T09:00Z', '{\"total\": \"5\"}')")
        result = run_pulsecart("metrics", "--date", str(day), env=env)
        assert result.returncode == 0 and "stayed open over 2 s" in result.stderr, result.stderr
        consumer.commit()
    assert metrics_stale_on(url, day)
    assert run_pulsecart("metrics", "--date", str(day), env=env).returncode == 0
    assert metrics(url, day) == (1, 5)


def test_a_deleted_event_makes_its_day_stale(week_done):
    url = week_done
    orders_before = metrics(url)[0]
    with psycopg.connect(url, autocommit=True) as consumer:
        deleted = consumer.execute("DELETE FROM events WHERE event_id = (SELECT event_id FROM events WHERE event_type ="
                                   " 'order.placed' AND \"timestamp\" >= '2025-03-03T00:00Z'"
                                   " AND \"timestamp\" < '2025-03-04T00:00Z' LIMIT 1)").rowcount
    assert deleted == 1
    assert any(line.startswith("metrics 2025-03-03 stale:") for line in stale_lines(url))
    repair_and_compare(url)
    assert metrics(url)[0] == orders_before - 1


def test_a_corrected_event_type_makes_its_day_stale(week_done):
    url = week_done
    with psycopg.connect(url, autocommit=True) as consumer:
        consumer.execute("UPDATE events SET event_type = 'order.placed', payload = '{\"total\": 7}' WHERE event_id ="
                         " (SELECT event_id FROM events WHERE event_type = 'product.viewed'"
                         " AND \"timestamp\" >= '2025-03-03T00:00Z' AND \"timestamp\" < '2025-03-04T00:00Z' LIMIT 1)")
    lines = stale_lines(url)
    assert any(line.startswith("metrics 2025-03-03 stale:") for line in lines)
    assert any(line.startswith("aggregate 2025-03-03 stale:") for line in lines)
    repair_and_compare(url)


def test_a_moved_event_makes_both_days_stale_and_a_rolled_back_change_none(week_done):
    url = week_done
    with psycopg.connect(url) as consumer:
        consumer.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\")"
                         " VALUES (gen_random_uuid(), 'ghost', 'order.placed', %s)", (utc(2025, 3, 5, 1),))
        consumer.rollback()
    assert check(url).returncode == 0
    with psycopg.connect(url, autocommit=True) as consumer:
        consumer.execute("UPDATE events SET \"timestamp\" = '2025-03-06T08:00Z' WHERE event_id = (SELECT event_id"
                         " FROM events WHERE \"timestamp\" >= '2025-03-02T00:00Z' AND \"timestamp\" < '2025-03-03T00:00Z'"
                         " LIMIT 1)")
    lines = stale_lines(url)
    assert any(line.startswith("metrics 2025-03-02 stale:") for line in lines)
    assert any(line.startswith("metrics 2025-03-06 stale:") for line in lines)
    repair_and_compare(url)


def test_a_change_the_trigger_cannot_record_still_commits_and_every_day_turns_stale(db_url, conn, cli):
    insert_events(conn, [("a", "order.placed", utc(2025, 3, d, 12)) for d in (1, 2)])
    assert cli("metrics", "--window", "2025-03-01..2025-03-02").exit_code == 0
    conn.execute("ALTER TABLE event_changes RENAME TO event_changes_broken")   # pulsecart's table is gone
    with psycopg.connect(db_url, autocommit=True) as consumer:
        consumer.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\")"
                         " VALUES (gen_random_uuid(), 'b', 'order.placed', '2025-03-02T13:00Z')")   # still commits
    conn.execute("ALTER TABLE event_changes_broken RENAME TO event_changes")
    status = json.loads(run_pulsecart("status", "--json", "--job", "metrics", "--end", "2025-03-02", "--days", "2",
                                      env={"PULSECART_DATABASE_URL": db_url}).stdout)
    assert [d["state"] for d in status["jobs"]["metrics"]["days"]] == ["stale", "stale"]
    assert cli("metrics", "--window", "2025-03-01..2025-03-02", "--stale").exit_code == 0
    assert metrics(db_url, date(2025, 3, 2))[0] == 2


def test_an_update_of_a_column_no_job_reads_changes_nothing(new_database):
    url = new_database(migrated=False)
    with psycopg.connect(url, autocommit=True) as conn:
        seed_database.build(conn, SPEC)
    env = {"PULSECART_DATABASE_URL": url}
    assert run_pulsecart("db", "migrate", env=env).returncode == 0
    assert run_pulsecart("metrics", "--window", WEEK, env=env).returncode == 0
    with psycopg.connect(url, autocommit=True) as consumer:
        consumer.execute("UPDATE events SET source_topic = 'commerce-events', received_at = now()")
    result = run_pulsecart("status", "--check", "--job", "metrics", "--end", "2025-03-07", "--days", "7", env=env)
    assert result.returncode == 0, result.stdout


def test_the_read_through_sequence_the_insert_trigger_reads_cannot_be_dropped_alone(conn):
    """Without it every insert would fail: a function that reads it (parsed at creation) keeps it."""
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        conn.execute("DROP SEQUENCE events_read_through")
