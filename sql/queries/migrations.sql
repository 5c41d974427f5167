-- name: ledger_exists
-- In pulsecart's schema only: a public.schema_migrations may be another tool's (Rails') or an earlier pulsecart's.
SELECT to_regclass(format('%%I.schema_migrations', %(schema)s::text));

-- name: public_ledger_shape
-- Whether public holds an earlier pulsecart's job_runs and a schema_migrations with its columns.
SELECT to_regclass('public.job_runs') IS NOT NULL
       AND (SELECT count(*) FROM pg_attribute
            WHERE attrelid = to_regclass('public.schema_migrations') AND attname IN ('version', 'name')) = 2;

-- name: public_ledger_first
SELECT name FROM public.schema_migrations ORDER BY version LIMIT 1;

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

-- name: adopted
-- Whether `db migrate` finished with the application's tables: the change-tracking triggers and the day
-- index on events, the outside-change triggers on event_aggregates, the view, the metrics column. A migrate
-- cut short (a signal, a lock it gave up on) leaves them missing, and a job run then would miss changes.
-- The trigger names come from pulsecart_cli/adopt.py, the day index is the one adopt looks for.
SELECT coalesce((SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('public.events')
                 AND tgname = ANY(%(events_triggers)s::text[])) = cardinality(%(events_triggers)s::text[])
          AND EXISTS (SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                      WHERE i.indrelid = to_regclass('public.events') AND i.indisvalid AND i.indpred IS NULL
                        AND a.attname = 'timestamp')
          AND (SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass('public.event_aggregates')
               AND tgname = ANY(%(aggregates_triggers)s::text[])) = cardinality(%(aggregates_triggers)s::text[])
          AND (SELECT relkind FROM pg_class WHERE oid = to_regclass('public.personalization_scores')) = 'v'
          AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('public.daily_metrics')
                      AND attname = 'invalid_order_totals' AND NOT attisdropped), false);
