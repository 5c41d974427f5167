-- name: ledger_exists
SELECT to_regclass('schema_migrations');

-- name: create_ledger
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied
SELECT version, applied_at FROM schema_migrations ORDER BY version;

-- name: record
INSERT INTO schema_migrations (version, name) VALUES (%(version)s, %(name)s);
