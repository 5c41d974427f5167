-- name: ledger_exists
SELECT to_regclass('schema_migrations');

-- name: create_ledger
-- checksum: sha256 of the migration file as applied; ledgers from before checksums get the column here.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    checksum   text
);
ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text;

-- name: applied
-- Reads a ledger with or without the checksum column (one that no `db migrate` of this version has seen).
SELECT version, name, applied_at, to_jsonb(m) ->> 'checksum' AS checksum
FROM schema_migrations AS m
ORDER BY version;

-- name: record
INSERT INTO schema_migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: fill_checksums
-- Rows applied before checksums were kept take the file's checksum as it is now.
UPDATE schema_migrations AS m
SET checksum = f.checksum
FROM unnest(%(versions)s::integer[], %(checksums)s::text[]) AS f (version, checksum)
WHERE m.version = f.version AND m.checksum IS NULL;
