"""Numbered schema migrations from ``sql/migrations/NNNN_name.sql``, each applied in its own transaction,
then the application's tables created or adopted (``adopt``).

pulsecart's own tables live in its schema (``database.schema_name()``, ``pulsecart`` by default), the ledger
(``schema_migrations``) among them: it keeps a checksum of each applied file. Versions need not be
contiguous: what matters is which known files are not applied yet (pending) and which applied versions this
pulsecart does not know (a newer pulsecart migrated the database: refuse to run). A database migrated by an
earlier pulsecart, with its tables in ``public``, has them moved into the schema.
"""

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from pulsecart_cli import adopt
from pulsecart_cli.database import schema_name
from pulsecart_cli.errors import MissingPrivileges, SchemaNotMigrated, SchemaTooNew
from pulsecart_cli.queries import one_row, query

MIGRATIONS_LOCK_KEY = 7_311_001
# What the earlier pulsecart's migrations (sql/migrations/legacy) made in public that 0001 makes in the schema.
LEGACY_TABLES = ("job_runs", "aggregated_days", "personalization_score_history", "dead_letter_quarantine")
LEGACY_FUNCTIONS = ("event_weight(text)", "aggregate_scores_lock_key()", "scores_input_version(date)",
                    "numeric_or_null(text)", "pulsecart_lock_holder(integer, integer)",
                    "job_run_abandoned(job_runs)", "job_run_status(job_runs)", "job_run_error(job_runs)",
                    "note_change_outside_aggregate()")
# Their bodies are read at call time: they get a search_path, as sessions other than pulsecart's lack it.
LEGACY_FUNCTIONS_READING_TABLES = ("job_run_abandoned(job_runs)", "job_run_status(job_runs)",
                                   "job_run_error(job_runs)", "note_change_outside_aggregate()")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Applied:
    version: int
    name: str
    applied_at: datetime
    checksum: str | None  # None: applied before checksums were kept, and not migrated since

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass
class MigrateReport:
    applied: list[Migration] = field(default_factory=list)
    moved_from_public: bool = False
    adopted: list[str] = field(default_factory=list)  # application tables that existed before the first migrate
    changed: list[str] = field(default_factory=list)  # what was done to the application's tables


def available(package: str = "pulsecart_cli.sql.migrations") -> list[Migration]:
    """The migration files of ``package`` (the earlier pulsecart's: ``pulsecart_cli.sql.migrations.legacy``)."""
    found = []
    for entry in files(package).iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(number), rest, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def applied(conn: psycopg.Connection) -> dict[int, Applied]:
    """Applied migrations by version; empty when the ledger table does not exist yet."""
    if one_row(conn.execute(query("migrations.ledger_exists"), {"schema": schema_name()}))[0] is None:
        return {}
    rows = conn.cursor(row_factory=class_row(Applied)).execute(query("migrations.applied")).fetchall()
    return {row.version: row for row in rows}


def unknown(done: dict[int, Applied]) -> list[Applied]:
    """Applied migrations this pulsecart does not ship: a newer pulsecart applied them."""
    known = {m.version for m in available()}
    return [a for version, a in sorted(done.items()) if version not in known]


def changed(done: dict[int, Applied]) -> list[Migration]:
    """Applied migrations whose file differs from the one that was applied."""
    return [m for m in available()
            if m.version in done and done[m.version].checksum not in (None, m.checksum)]


def refuse_newer(done: dict[int, Applied]) -> None:
    newer = unknown(done)
    if newer:
        raise SchemaTooNew(f"this database was migrated by a newer pulsecart "
                           f"({', '.join(a.label for a in newer)}): upgrade pulsecart")


def pending(conn: psycopg.Connection) -> list[Migration]:
    done = applied(conn)
    refuse_newer(done)
    return [m for m in available() if m.version not in done]


def migrate(conn: psycopg.Connection) -> MigrateReport:
    """Apply pending migrations in order, then create or adopt the application's tables; safe to run again
    and from two processes at once. Checks the privileges every step needs before the first: when one is
    missing, changes nothing. Writes nothing when a newer pulsecart migrated the database."""
    _take_migrations_lock(conn)
    try:
        done = applied(conn)
        refuse_newer(done)
        schema = schema_name()
        role = one_row(conn.execute("SELECT current_user"))[0]
        plan = adopt.plan(conn, schema, role)
        adopt.refuse_missing(plan.steps, role)
        report = MigrateReport(adopted=plan.adopted if not done else [])
        _create_schema(conn, schema, role)
        if not done and _legacy_ledger(conn):
            _move_from_public(conn, schema)
            report.moved_from_public, report.adopted = True, []
        conn.execute(query("migrations.create_ledger"))
        known = available()
        conn.execute(query("migrations.fill_checksums"),
                     {"versions": [m.version for m in known], "checksums": [m.checksum for m in known]})
        for migration in pending(conn):
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(query("migrations.record"),
                             {"version": migration.version, "name": migration.name, "checksum": migration.checksum})
            report.applied.append(migration)
        report.changed = adopt.apply(conn, plan.steps)
        return report
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK_KEY,))


def _take_migrations_lock(conn: psycopg.Connection) -> None:
    """One migrate at a time. Waits between short tries, not in one statement: a waiting statement holds a
    snapshot, and CREATE INDEX CONCURRENTLY in the migrate holding the lock would wait for it in turn."""
    while not one_row(conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATIONS_LOCK_KEY,)))[0]:
        time.sleep(0.2)


def _create_schema(conn: psycopg.Connection, schema: str, role: str) -> None:
    exists, can_create = one_row(conn.execute(
        "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s),"
        " has_database_privilege(current_database(), 'CREATE')", (schema,)))
    if exists:
        return
    if not can_create:
        raise MissingPrivileges(
            f"role {role} cannot create the schema {schema} in this database: nothing was changed; have the "
            "database owner run the SQL printed above, then run `pulsecart db migrate` again",
            owner_sql=sql.SQL("CREATE SCHEMA {} AUTHORIZATION {};").format(
                sql.Identifier(schema), sql.Identifier(role)).as_string(conn))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def _legacy_ledger(conn: psycopg.Connection) -> bool:
    """public.schema_migrations is an earlier pulsecart's (not, say, Rails'): its first row is 0001_initial
    and public.job_runs exists."""
    if not one_row(conn.execute(query("migrations.public_ledger_shape")))[0]:
        return False
    first = conn.execute(query("migrations.public_ledger_first")).fetchone()
    return first is not None and first[0] == "initial"


def _move_from_public(conn: psycopg.Connection, schema: str) -> None:
    """An earlier pulsecart's tables: its pending legacy migrations applied in public, then its own objects
    moved into the schema (they are 0001's), its ledger replaced by the schema's."""
    applied_legacy = {r[0] for r in conn.execute("SELECT version FROM public.schema_migrations")}
    for migration in available("pulsecart_cli.sql.migrations.legacy"):
        if migration.version not in applied_legacy:
            with conn.transaction():
                conn.execute("SET LOCAL search_path = public")
                conn.execute(migration.sql)
    target = sql.Identifier(schema)
    statements: list[adopt.Statement] = [
        sql.SQL("ALTER TABLE public.{} SET SCHEMA {}").format(sql.Identifier(t), target) for t in LEGACY_TABLES]
    statements.append(sql.SQL("ALTER SEQUENCE public.aggregate_counts_version SET SCHEMA {}").format(target))
    for function in LEGACY_FUNCTIONS:  # job_runs has moved by now: its row type is found in the schema
        statements.append(sql.SQL("ALTER FUNCTION public.{} SET SCHEMA {}").format(sql.SQL(function), target))
    for function in LEGACY_FUNCTIONS_READING_TABLES:
        statements.append(sql.SQL("ALTER FUNCTION {}.{} SET search_path = {}, public").format(
            target, sql.SQL(function), target))
    statements.append(sql.SQL("DROP TABLE public.schema_migrations"))
    statements.append(sql.SQL(query("migrations.create_ledger")))
    first = available()[0]
    statements.append(sql.SQL("INSERT INTO {}.schema_migrations (version, name, checksum) VALUES ({}, {}, {})").format(
        target, sql.Literal(first.version), sql.Literal(first.name), sql.Literal(first.checksum)))
    locks: list[tuple[sql.Composable, str]] = [(sql.Identifier("public", t), "ACCESS EXCLUSIVE") for t in LEGACY_TABLES]
    adopt.with_brief_locks(conn, locks,
                           statements, "moving pulsecart's tables out of public")
    conn.execute("DROP INDEX CONCURRENTLY IF EXISTS public.events_ingested_at_idx")


def require_current(conn: psycopg.Connection) -> None:
    """Every migration this pulsecart ships is applied, and none it does not know."""
    missing = pending(conn)
    if missing:
        names = ", ".join(m.label for m in missing)
        raise SchemaNotMigrated(f"the database schema is not migrated (pending: {names})",
                                hint="run `pulsecart db migrate`")
    if not one_row(conn.execute(query("migrations.adopted"), {
            "events_triggers": [*adopt.EVENT_TRIGGERS, adopt.TRUNCATE_TRIGGER[0]],
            "aggregates_triggers": list(adopt.AGGREGATE_TRIGGERS)}))[0]:
        raise SchemaNotMigrated("db migrate did not finish with the application's tables (the change tracking, "
                                "index and triggers of events and event_aggregates, the view personalization_scores)",
                                hint="run `pulsecart db migrate` again")
