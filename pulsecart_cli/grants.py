"""`pulsecart db grant ROLE`: what a login role needs to run every job, and nothing more."""

import psycopg
from psycopg import sql

from pulsecart_cli.adopt import APP_SCHEMA
from pulsecart_cli.database import schema_name

TABLE_WRITES = "SELECT, INSERT, UPDATE, DELETE"


def grant_statements(role: str) -> list[sql.Composed]:
    """Read events; read and write pulsecart's schema and the outputs. Tables and sequences a later
    `db migrate` (by the role running this) creates are covered by default privileges."""
    schema, grantee = sql.Identifier(schema_name()), sql.Identifier(role)
    app = sql.Identifier(APP_SCHEMA)
    statements = [
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "GRANT " + TABLE_WRITES + " ON ALL TABLES IN SCHEMA {schema} TO {role}",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT " + TABLE_WRITES + " ON TABLES TO {role}",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
        "GRANT USAGE ON SCHEMA {app} TO {role}",
        "GRANT SELECT ON {app}.events TO {role}",
        "GRANT " + TABLE_WRITES + " ON {app}.event_aggregates, {app}.daily_metrics TO {role}",
        "GRANT SELECT ON {app}.personalization_scores TO {role}",
    ]
    return [sql.SQL(s).format(schema=schema, role=grantee, app=app) for s in statements]


def grant(conn: psycopg.Connection, role: str) -> None:
    with conn.transaction():
        for statement in grant_statements(role):
            conn.execute(statement)
