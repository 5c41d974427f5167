"""Numbered schema migrations from ``sql/migrations/NNNN_name.sql``, each applied in its own transaction."""

from dataclasses import dataclass
from importlib.resources import files

import psycopg

from pulsecart_cli.errors import SchemaNotMigrated
from pulsecart_cli.queries import query

MIGRATIONS_LOCK_KEY = 7_311_001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in files("pulsecart_cli.sql.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(number), rest, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def applied(conn: psycopg.Connection) -> dict[int, object]:
    """Applied versions and when; empty when the ledger table does not exist yet."""
    if conn.execute(query("migrations.ledger_exists")).fetchone()[0] is None:
        return {}
    return dict(conn.execute(query("migrations.applied")).fetchall())


def pending(conn: psycopg.Connection) -> list[Migration]:
    done = applied(conn)
    return [m for m in available() if m.version not in done]


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply pending migrations in order; safe to run again and from two processes at once."""
    conn.execute(query("migrations.create_ledger"))
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS_LOCK_KEY,))
    try:
        done = []
        for migration in pending(conn):
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(query("migrations.record"), {"version": migration.version, "name": migration.name})
            done.append(migration)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK_KEY,))


def require_current(conn: psycopg.Connection) -> None:
    missing = pending(conn)
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise SchemaNotMigrated(f"the database schema is not migrated (pending: {names})",
                                hint="run `pulsecart db migrate`")
