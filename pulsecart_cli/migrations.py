"""Numbered schema migrations from ``sql/migrations/NNNN_name.sql``, each applied in its own transaction.

The ledger (``schema_migrations``) keeps a checksum of each applied file. Versions need not be
contiguous: what matters is which known files are not applied yet (pending) and which applied
versions this pulsecart does not know (a newer pulsecart migrated the database: refuse to run).
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files

import psycopg
from psycopg.rows import class_row

from pulsecart_cli.errors import SchemaNotMigrated, SchemaTooNew
from pulsecart_cli.queries import one_row, query

MIGRATIONS_LOCK_KEY = 7_311_001


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


def available() -> list[Migration]:
    found = []
    for entry in files("pulsecart_cli.sql.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(number), rest, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def applied(conn: psycopg.Connection) -> dict[int, Applied]:
    """Applied migrations by version; empty when the ledger table does not exist yet."""
    if one_row(conn.execute(query("migrations.ledger_exists")))[0] is None:
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


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply pending migrations in order; safe to run again and from two processes at once.
    Writes nothing when a newer pulsecart migrated the database."""
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATIONS_LOCK_KEY,))
    try:
        refuse_newer(applied(conn))
        conn.execute(query("migrations.create_ledger"))
        known = available()
        conn.execute(query("migrations.fill_checksums"),
                     {"versions": [m.version for m in known], "checksums": [m.checksum for m in known]})
        done = []
        for migration in pending(conn):
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(query("migrations.record"),
                             {"version": migration.version, "name": migration.name, "checksum": migration.checksum})
            done.append(migration)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK_KEY,))


def require_current(conn: psycopg.Connection) -> None:
    """Every migration this pulsecart ships is applied, and none it does not know."""
    missing = pending(conn)
    if missing:
        names = ", ".join(m.label for m in missing)
        raise SchemaNotMigrated(f"the database schema is not migrated (pending: {names})",
                                hint="run `pulsecart db migrate`")
