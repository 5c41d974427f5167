"""`db migrate` adopts the database PulseCart already has: the consumer's events table (plain or partitioned,
with columns and indexes of its own) and the seed's output tables with their rows, while the consumer keeps
inserting; the app's scores do not move until pulsecart's first aggregate; a least-privilege role runs the jobs."""

import json
import threading
import time
import uuid
from datetime import UTC, date, datetime

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pulsecart_cli import migrations, pubsub
from pulsecart_cli.dates import today_utc
from pulsecart_cli.seed import SeedSpec, seed_events
from tests import seed_database
from tests.helpers import connect, event, publish_dead_letters, run_pulsecart

SPEC = SeedSpec(date(2025, 3, 1), 8, 300, 2_000, 7)
WINDOW = "2025-03-01..2025-03-08"
SEED_DAG_DAYS = 5


class Consumer(threading.Thread):
    """The Pub/Sub consumer: single-row inserts, each its own transaction, with lock_timeout = 1s, so any
    lock of pulsecart's that holds an insert up for longer makes that insert fail."""

    def __init__(self, url: str, day: date):
        super().__init__(daemon=True)
        self.url, self.day, self.stop = url, day, threading.Event()
        self.inserted, self.failures, self.worst_s = 0, [], 0.0

    def run(self):
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '1s'")
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    conn.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\", payload)"
                                 " VALUES (%s, 'consumer', 'product.viewed', %s, '{}')",
                                 (uuid.uuid4(), datetime.combine(self.day, datetime.min.time(), UTC)))
                    self.inserted += 1
                except psycopg.Error as exc:
                    self.failures.append(str(exc))
                self.worst_s = max(self.worst_s, time.monotonic() - started)
                time.sleep(0.002)


def migrate_while_the_consumer_inserts(url: str) -> tuple:
    consumer = Consumer(url, date(2025, 3, 15))
    consumer.start()
    time.sleep(0.2)
    before = consumer.inserted
    result = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": url})
    during = consumer.inserted - before
    consumer.stop.set()
    consumer.join(10)
    assert result.returncode == 0, result.stderr
    assert consumer.failures == []          # no insert waited a second for a lock of pulsecart's
    assert during > 0                       # and the consumer really was writing meanwhile
    return result, consumer


def outputs(url: str) -> dict:
    """Everything the jobs wrote for the window's days, comparable across databases."""
    with connect(url) as conn:
        return {
            "counts": conn.execute("SELECT user_id::text, date, event_type::text, event_count::bigint FROM event_aggregates"
                                   " WHERE date BETWEEN '2025-03-01' AND '2025-03-08' ORDER BY 1, 2, 3").fetchall(),
            "history": conn.execute("SELECT as_of, user_id, score FROM personalization_score_history"
                                    " WHERE as_of BETWEEN '2025-03-01' AND '2025-03-08' ORDER BY 1, 2").fetchall(),
            "metrics": conn.execute("SELECT date, orders_placed::bigint, carts_abandoned::bigint, abandonment_rate,"
                                    " revenue, invalid_order_totals FROM daily_metrics"
                                    " WHERE date BETWEEN '2025-03-01' AND '2025-03-08' ORDER BY 1").fetchall(),
        }


@pytest.fixture
def fresh_outputs(new_database):
    """What a database pulsecart created itself gives for the same events."""
    url = new_database()
    with connect(url, autocommit=True) as conn:
        seed_events(conn, SPEC)
    for job in ("aggregate", "metrics"):
        assert run_pulsecart(job, "--window", WINDOW, env={"PULSECART_DATABASE_URL": url}).returncode == 0
    return outputs(url)


def status_states(url: str, end: str = "2025-03-08", days: int = 8) -> dict:
    result = run_pulsecart("status", "--json", "--end", end, "--days", str(days), env={"PULSECART_DATABASE_URL": url})
    return {job: [d["state"] for d in report["days"]] for job, report in json.loads(result.stdout)["jobs"].items()}


@pytest.mark.parametrize("partitioned", [False, True], ids=["plain", "partitioned"])
def test_migrate_adopts_the_seeds_database_while_the_consumer_inserts(empty_db_url, fresh_outputs, partitioned):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        seed_database.build(conn, SPEC, partitioned=partitioned, seed_dag_days=SEED_DAG_DAYS)
        app_before = seed_database.app_scores(conn)
        old_metrics = conn.execute("SELECT * FROM daily_metrics ORDER BY date").fetchall()
        events_before = conn.execute("SELECT count(*), sum(hashtext(event_id::text)) FROM events").fetchone()
    assert len(app_before) == 300 and len(old_metrics) == SEED_DAG_DAYS

    result, consumer = migrate_while_the_consumer_inserts(empty_db_url)
    lines = result.stdout.splitlines()
    for table in ("events", "event_aggregates", "daily_metrics", "personalization_scores"):
        assert any(line.startswith(f"adopted public.{table}") for line in lines), lines
    assert any(line.startswith("built the day index events_pulsecart_day_idx") for line in lines)
    assert any(line.startswith("added change tracking to public.events") for line in lines)

    with connect(empty_db_url, autocommit=True) as conn:
        # the app sees the seed's scores, as they were, until pulsecart's first aggregate
        assert seed_database.app_scores(conn) == app_before
        assert conn.execute("SELECT has_table_privilege('pulsecart_app', 'public.personalization_scores', 'SELECT')"
                            ).fetchone()[0]
        # the old metrics rows stay; existing events are untouched
        assert [row[:5] for row in conn.execute("SELECT * FROM daily_metrics ORDER BY date")] == \
               [row[:5] for row in old_metrics]
        assert conn.execute("SELECT count(*) - %s, sum(hashtext(event_id::text)) FILTER (WHERE user_id <> 'consumer')"
                            " FROM events", (consumer.inserted,)).fetchone() == events_before
        # the day index is valid (on a partitioned table: built on every partition and attached)
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.events_pulsecart_day_idx'::regclass"
                            ).fetchone() == (True,)
        # only the application's tables in public
        public = {r[0] for r in conn.execute("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = relnamespace"
                                             " WHERE nspname = 'public' AND relkind IN ('r', 'v', 'p')"
                                             " AND NOT relispartition")}
        assert public == {"events", "event_aggregates", "daily_metrics", "personalization_scores"}

    again = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url})
    assert (again.returncode, again.stdout.strip()) == (0, "schema is up to date")

    assert status_states(empty_db_url) == {"aggregate": ["missing"] * 8, "metrics": ["missing"] * 8}
    for job in ("aggregate", "metrics"):
        run = run_pulsecart(job, "--window", WINDOW, "--only-missing", env={"PULSECART_DATABASE_URL": empty_db_url})
        assert run.returncode == 0, run.stderr
    assert status_states(empty_db_url) == {"aggregate": ["succeeded"] * 8, "metrics": ["succeeded"] * 8}
    assert outputs(empty_db_url) == fresh_outputs
    with connect(empty_db_url) as conn:   # the app now reads pulsecart's current scores, same columns
        current = conn.execute("SELECT user_id, score, computed_at, as_of FROM personalization_scores").fetchall()
        assert {r[3] for r in current} == {date(2025, 3, 8)}
        assert sorted((u, s) for u, s, *_ in current) == \
               sorted((u, s) for d, u, s in fresh_outputs["history"] if d == date(2025, 3, 8))


def test_seed_refuses_a_database_whose_events_it_did_not_write(empty_db_url):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        seed_database.build(conn, SPEC)
    assert run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url}).returncode == 0
    with connect(empty_db_url) as conn:
        before = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    result = run_pulsecart("seed", "--start", "2025-04-01", "--days", "1", env={"PULSECART_DATABASE_URL": empty_db_url})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: seed: the events table holds events pulsecart did not seed (the consumer's?): nothing was written"
        " (hint: seed only an empty database or one seeded before)")
    with connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == before


def test_seed_loads_into_an_empty_database_and_again_into_its_own(db_url):
    env = {"PULSECART_DATABASE_URL": db_url}
    assert run_pulsecart("seed", "--start", "2025-04-01", "--days", "1", "--events-per-day", "10", env=env).returncode == 0
    assert run_pulsecart("seed", "--start", "2025-04-02", "--days", "1", "--events-per-day", "10", env=env).returncode == 0


def _role(conn, name: str, *extra: str) -> str:
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN " + " ".join(extra)).format(sql.Identifier(name)))
    return name


def test_migrate_by_a_role_that_does_not_own_events_prints_the_owners_sql_and_changes_nothing(empty_db_url):
    migrator = f"migrator_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(empty_db_url, autocommit=True) as owner:
        seed_database.build(owner, SPEC, seed_dag_days=2)
        _role(owner, migrator)
        owner.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(owner.info.dbname), sql.Identifier(migrator)))
        owner.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(migrator)))
        owner.execute(sql.SQL("GRANT SELECT ON events TO {}").format(sql.Identifier(migrator)))
    as_migrator = make_conninfo(empty_db_url, user=migrator)

    refused = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": as_migrator})
    assert refused.returncode == 6
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith(f"Error: role {migrator} lacks ")
    assert "the TRIGGER privilege on public.events" in refused.stderr and "ownership of public.events" in refused.stderr
    assert "nothing was changed" in refused.stderr
    owner_sql = refused.stdout.splitlines()
    assert f'GRANT TRIGGER ON "public"."events" TO "{migrator}";' in owner_sql
    assert f'ALTER TABLE "public"."event_aggregates" OWNER TO "{migrator}";' in owner_sql
    assert ('CREATE INDEX CONCURRENTLY IF NOT EXISTS "events_pulsecart_day_idx" ON "public"."events" '
            '("timestamp") INCLUDE (user_id, event_type);') in owner_sql
    with psycopg.connect(empty_db_url, autocommit=True) as owner:
        assert owner.execute("SELECT to_regnamespace('pulsecart')").fetchone()[0] is None
        assert owner.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events'::regclass").fetchone()[0] == 0
        for statement in owner_sql:   # the owner runs what was printed, one statement at a time
            owner.execute(statement)
    migrated = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": as_migrator})
    assert migrated.returncode == 0, migrated.stderr
    assert run_pulsecart("aggregate", "--date", "2025-03-02", env={"PULSECART_DATABASE_URL": as_migrator}).returncode == 0


def test_a_role_given_db_grant_runs_every_command_and_cannot_write_events(db_url):
    role = f"jobs_{uuid.uuid4().hex[:8]}"
    with connect(db_url, autocommit=True) as owner:
        seed_events(owner, SeedSpec(date(2025, 3, 1), 3, 50, 300, 1))
        _role(owner, role)
    printed = run_pulsecart("db", "grant", role, "--print")
    assert printed.returncode == 0 and f'GRANT SELECT ON "public".events TO "{role}";' in printed.stdout
    granted = run_pulsecart("db", "grant", role, env={"PULSECART_DATABASE_URL": db_url})
    assert granted.returncode == 0, granted.stderr

    as_role = {"PULSECART_DATABASE_URL": make_conninfo(db_url, user=role)}
    for args in (["aggregate", "--window", "2025-03-01..2025-03-03"], ["metrics", "--window", "2025-03-01..2025-03-03"],
                 ["aggregate", "--window", "2025-03-01..2025-03-03", "--stale"],
                 ["status", "--end", "2025-03-03", "--days", "3", "--check"],
                 ["runs"], ["check-complete", "--date", "2025-03-01"], ["forget", "metrics", "--date", "2025-03-03"],
                 ["metrics", "--date", "2025-03-03"], ["prune", "--keep-days", "8"], ["quarantine", "list"],
                 ["db", "status"]):
        result = run_pulsecart(*args, env=as_role)
        assert result.returncode == 0, (args, result.stderr)

    with psycopg.connect(make_conninfo(db_url, user=role), autocommit=True) as conn:
        for statement in (("INSERT INTO public.events (event_id, user_id, event_type, \"timestamp\")"
                          " VALUES (gen_random_uuid(), 'x', 'order.placed', now())"),
                          "UPDATE public.events SET user_id = 'x'", "DELETE FROM public.events",
                          "ALTER TABLE public.events ADD COLUMN x int", "TRUNCATE public.events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_a_database_of_an_earlier_pulsecart_moves_into_its_schema(empty_db_url):
    """An earlier pulsecart kept its tables in public: they move, with their rows, and the jobs go on."""
    from importlib.resources import files
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now(), checksum text)")
        for entry in sorted(files("pulsecart_cli.sql.migrations.legacy").iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".sql"):
                conn.execute(entry.read_text())
                number, _, name = entry.name.removesuffix(".sql").partition("_")
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (int(number), name))
        conn.execute("INSERT INTO job_runs (job, run_date, status, trigger, host, version, details)"
                     " VALUES ('metrics', '2025-02-01', 'succeeded', 'manual', 'h', '0.1.0', '{}')")
        conn.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\") VALUES"
                     " (gen_random_uuid(), 'u1', 'order.placed', '2025-03-01T10:00Z')")

    result = run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "moved pulsecart's tables from public into the schema pulsecart"
    with connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('public.job_runs'), to_regclass('public.schema_migrations')"
                            ).fetchone() == (None, None)
        assert [v for v, in conn.execute("SELECT version FROM pulsecart.schema_migrations ORDER BY 1")] == \
               [m.version for m in migrations.available()]
        assert conn.execute("SELECT run_date FROM pulsecart.job_runs").fetchall() == [(date(2025, 2, 1),)]
    env = {"PULSECART_DATABASE_URL": empty_db_url}
    assert run_pulsecart("aggregate", "--date", "2025-03-01", env=env).returncode == 0
    states = status_states(empty_db_url, end="2025-03-01", days=1)
    assert states == {"aggregate": ["succeeded"], "metrics": ["missing"]}
    with connect(empty_db_url) as conn:
        assert conn.execute("SELECT user_id, score FROM personalization_scores").fetchall() == [("u1", 10)]


def test_reconcile_runs_as_a_role_given_db_grant(db_url, conn, gcp_project, pubsub_emulator):
    """The role keeps reconcile's ledger and quarantine: a poison message is quarantined, the valid one
    republished, both recorded, under the least-privilege role."""
    role = _role(conn, f"jobs_{uuid.uuid4().hex[:8]}")
    assert run_pulsecart("db", "grant", role, env={"PULSECART_DATABASE_URL": db_url}).returncode == 0
    env = {"PULSECART_DATABASE_URL": make_conninfo(db_url, user=role), "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
           "PULSECART_GCP_PROJECT": gcp_project}
    assert run_pulsecart("pubsub", "setup", env=env).returncode == 0
    clients = pubsub.connect(gcp_project)
    publish_dead_letters(clients, [(event(1), {}, ""), (b"not json {", {}, "")])
    result = run_pulsecart("reconcile", "--topic", "commerce-events", "--pull-timeout", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert conn.execute("SELECT reason FROM dead_letter_quarantine").fetchall() == [("not JSON",)]
    assert conn.execute("SELECT job, status, rows_written FROM job_runs").fetchall() == [("reconcile", "succeeded", 2)]
    entry = conn.execute("SELECT id FROM dead_letter_quarantine").fetchone()[0]
    discarded = run_pulsecart("quarantine", "discard", str(entry), "--reason", "test data", env=env)
    assert discarded.returncode == 0, discarded.stderr


def test_prune_keeps_the_current_scores_and_a_rerun_rebuilds_a_pruned_day(db_url, conn):
    """Score history older than --keep-days goes, one day at a time; the current scores, the counts and
    the day the oldest kept day carries forward from stay; status says which days were pruned."""
    days = 12
    seed_events(conn, SeedSpec(date(2025, 3, 1), days, 40, 200, 5))
    env = {"PULSECART_DATABASE_URL": db_url}
    assert run_pulsecart("aggregate", "--window", "2025-03-01..2025-03-12", env=env).returncode == 0
    before = conn.execute("SELECT as_of, user_id, score FROM personalization_score_history ORDER BY 1, 2").fetchall()
    counts = conn.execute("SELECT count(*) FROM event_aggregates").fetchone()[0]

    today = today_utc()
    keep = (today - date(2025, 3, 10)).days       # keep 03-10 .. today: 03-09 stays (03-10 carries from it)
    result = run_pulsecart("prune", "--keep-days", str(keep), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pruned the scores as of 8 day(s), 2025-03-01..2025-03-08")
    kept = {d for d, in conn.execute("SELECT DISTINCT as_of FROM personalization_score_history")}
    assert kept == {date(2025, 3, d) for d in (9, 10, 11, 12)}
    assert conn.execute("SELECT count(*) FROM event_aggregates").fetchone()[0] == counts
    assert conn.execute("SELECT max(as_of) FROM personalization_scores").fetchone()[0] == date(2025, 3, 12)

    status = json.loads(run_pulsecart("status", "--json", "--job", "aggregate", "--end", "2025-03-12", "--days", "12",
                                      env=env).stdout)["jobs"]["aggregate"]["days"]
    assert [d["state"] for d in status] == ["stale"] * 8 + ["succeeded"] * 4
    assert status[0]["reason"].startswith("scores removed by `pulsecart prune` on ")
    again = run_pulsecart("prune", "--keep-days", str(keep), env=env)
    assert again.stdout.strip() == f"nothing to prune: no scores older than {keep} days"

    assert run_pulsecart("aggregate", "--window", "2025-03-01..2025-03-12", "--stale", env=env).returncode == 0
    assert conn.execute("SELECT as_of, user_id, score FROM personalization_score_history ORDER BY 1, 2"
                        ).fetchall() == before


def test_the_consumer_needs_no_execute_right_and_its_own_timestamp_trigger_is_seen(empty_db_url):
    """A hardened database revokes EXECUTE from PUBLIC; a consumer's BEFORE trigger fills in "timestamp".
    The consumer's inserts still commit, and the day they land on is the one tracked."""
    with psycopg.connect(empty_db_url, autocommit=True) as owner:
        seed_database.build(owner, SPEC)
        consumer = _role(owner, f"consumer_{uuid.uuid4().hex[:8]}")
        owner.execute(sql.SQL("GRANT SELECT, INSERT ON events TO {}").format(sql.Identifier(consumer)))
        owner.execute("CREATE FUNCTION fill_timestamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                      " NEW.\"timestamp\" := coalesce(NEW.\"timestamp\", (NEW.payload ->> 'occurred_at')::timestamptz);"
                      " RETURN NEW; END $$")
        owner.execute("ALTER TABLE events ALTER COLUMN \"timestamp\" DROP NOT NULL")
        owner.execute("CREATE TRIGGER set_event_timestamp BEFORE INSERT ON events FOR EACH ROW"
                      " EXECUTE FUNCTION fill_timestamp()")
    env = {"PULSECART_DATABASE_URL": empty_db_url}
    assert run_pulsecart("db", "migrate", env=env).returncode == 0
    with psycopg.connect(empty_db_url, autocommit=True) as owner:
        owner.execute("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pulsecart FROM PUBLIC")
    assert run_pulsecart("metrics", "--window", WINDOW, env=env).returncode == 0
    with psycopg.connect(make_conninfo(empty_db_url, user=consumer), autocommit=True) as conn:
        conn.execute("INSERT INTO events (event_id, user_id, event_type, payload) VALUES"
                     " (gen_random_uuid(), 'late', 'order.placed', '{\"occurred_at\": \"2025-03-04T10:00Z\"}')")
    assert status_states(empty_db_url)["metrics"] == ["succeeded"] * 3 + ["stale"] + ["succeeded"] * 4


def test_jobs_refuse_a_database_whose_migrate_did_not_finish(db_url, conn):
    conn.execute("DROP TRIGGER zz_pulsecart_note_insert ON events")     # as a migrate cut short would leave it
    result = run_pulsecart("aggregate", "--date", "2025-03-01", env={"PULSECART_DATABASE_URL": db_url})
    assert result.returncode == 1
    assert result.stderr.startswith("Error: db migrate did not finish with the application's tables")
    assert run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": db_url}).stdout.startswith(
        "added change tracking to public.events")
    assert run_pulsecart("aggregate", "--date", "2025-03-01", env={"PULSECART_DATABASE_URL": db_url}).returncode == 0


def test_the_seeds_old_dag_writing_after_migrate_does_not_empty_the_apps_scores(empty_db_url):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        seed_database.build(conn, SPEC, seed_dag_days=5)
        before = seed_database.app_scores(conn)
    assert run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url}).returncode == 0
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(seed_database.SEED_AGGREGATE, {"day": date(2025, 3, 6)})   # one more night of the seed's DAG
        assert seed_database.app_scores(conn) == before


def test_migrate_replaces_an_earlier_insert_trigger_on_every_partition_while_the_consumer_inserts(empty_db_url):
    earlier = ("CREATE OR REPLACE TRIGGER zz_pulsecart_note_insert BEFORE INSERT ON events FOR EACH ROW WHEN"
               " (strpos(coalesce(current_setting('pulsecart.changed_event_days', true), ''), CASE WHEN"
               " isfinite(NEW.\"timestamp\") THEN ' ' || ((NEW.\"timestamp\" AT TIME ZONE 'UTC')::date"
               " - DATE '2000-01-01') || ' ' END) = 0) EXECUTE FUNCTION pulsecart.note_event_change()")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        seed_database.build(conn, SPEC, partitioned=True)
    assert run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url}).returncode == 0
    definitions = "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'zz_pulsecart_note_insert'"
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(earlier)                   # as pulsecart before migration 0006 left it
        assert all(" WHEN (" in d for (d,) in conn.execute(definitions))
    result, _ = migrate_while_the_consumer_inserts(empty_db_url)
    assert result.stdout.startswith("updated the change tracking on public.events (a cheaper insert trigger) "
                                    f"(triggers on {SPEC.days + 12} table(s)")   # the parent and its partitions
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        found = [d for (d,) in conn.execute(definitions)]
        assert len(found) == SPEC.days + 12 and not any(" WHEN (" in d for d in found)
        conn.execute("DELETE FROM pulsecart.event_changes")
        conn.execute("SELECT pulsecart.note_events_read_through('2025-03-07')")   # as a run of the week does
        with conn.transaction():                # one change row a transaction and day, as before
            for hour in (1, 2, 25):
                conn.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\") VALUES"
                             " (gen_random_uuid(), 'u', 'product.viewed', '2025-03-04 00:00Z'::timestamptz"
                             " + make_interval(hours => %s))", (hour,))
        assert conn.execute("SELECT day, changes FROM pulsecart.event_changes ORDER BY day").fetchall() == [
            (date(2025, 3, 4), 1), (date(2025, 3, 5), 1)]
    assert run_pulsecart("db", "migrate", env={"PULSECART_DATABASE_URL": empty_db_url}).stdout == (
        "schema is up to date\n")
