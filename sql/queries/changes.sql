-- name: fold
-- Folds the change rows the consumer's triggers wrote into per-day totals, so that readers count few rows.
SELECT fold_event_changes();

-- name: read_events_through
-- Raises events_read_through to the run's last day: inserts into its days write change rows from now on.
SELECT note_events_read_through(%(last_day)s);

-- name: event_writers
-- The transactions that hold a write lock on events or on any of its partitions, at any depth (an insert into
-- a partition locks only that one for writing), but this session's: those that may have inserted into a day
-- before the run raised events_read_through, without a note (migration 0007).
WITH RECURSIVE event_tables (oid) AS (
    SELECT 'public.events'::regclass::oid
    UNION ALL
    SELECT i.inhrelid FROM pg_inherits i JOIN event_tables t ON i.inhparent = t.oid
)
SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}') FROM pg_locks
WHERE locktype = 'relation' AND granted AND pid IS DISTINCT FROM pg_backend_pid()
  AND mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND relation IN (SELECT oid FROM event_tables)
  AND (%(among)s::text[] IS NULL OR virtualtransaction = ANY(%(among)s::text[]));

-- name: note_writer_may_have_changed
-- A day run while a transaction that writes events stayed open: it may hold rows of the day the run did not
-- see, so the day counts as changed after this run (stale until a run after that transaction ends).
INSERT INTO event_changes (day) VALUES (%(day)s);
