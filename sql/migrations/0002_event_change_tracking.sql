-- Every committed change to a day's events (an insert, a delete, an update of a column a job reads) adds
-- to that day's change count, in the writer's own transaction: it commits or rolls back with the rows.
-- A run records the count it saw in the same snapshot as the events it read (job_runs.details ->>
-- 'event_changes_seen'); a day whose count is higher now changed after its run: `status` calls it stale.
-- Triggers on public.events (installed by `db migrate`, pulsecart_cli/adopt.py) call note_event_change().

-- Insert-only, one row per writer transaction and UTC day (no counter row that concurrent writers would
-- wait on), no index (the consumer pays for one heap row). day '-infinity': every day (a TRUNCATE).
CREATE TABLE event_changes (
    day     date NOT NULL,
    changes bigint NOT NULL DEFAULT 1
);

-- event_changes rows folded in by pulsecart's runs (fold_event_changes), so that readers count few rows.
CREATE TABLE event_change_totals (
    day     date PRIMARY KEY,
    changes bigint NOT NULL
);

-- Advanced when the trigger could not record a change (pulsecart's table gone, a lock, a full disk): the
-- consumer's write still commits, and the change counts every day, so every day run before it is stale.
CREATE SEQUENCE untracked_event_changes;

-- The key of an event's UTC day in the set of days a writer transaction has noted: days since 2000-01-01
-- (an integer, whatever the session's DateStyle) between spaces; NULL for no day (an infinite or NULL
-- timestamp, which no job reads). The insert trigger's WHEN clause and note_event_change share it.
CREATE FUNCTION event_day_key(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN isfinite(ts) THEN ' ' || ((ts AT TIME ZONE 'UTC')::date - DATE '2000-01-01') || ' ' END;

-- Once per writer transaction and day: the day keys it noted (days since 2000-01-01, an integer whatever
-- the session's DateStyle, between spaces) are in a transaction-local setting that the insert trigger's
-- WHEN clause reads, so the rest of the transaction's rows of that day skip the function.
-- It runs in the consumer's transaction and never raises; a lock on event_changes (a DBA's CREATE INDEX)
-- holds the writer up 50 ms at most (lock_timeout), then counts as a change it could not record. It runs as
-- its owner (SECURITY DEFINER), so the consumer's role needs no rights in pulsecart's schema.
CREATE FUNCTION note_event_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET lock_timeout = '50ms' AS $$
DECLARE
    noted text := coalesce(current_setting('pulsecart.changed_event_days', true), '');
    stamps      timestamptz[];
    stamp       timestamptz;
    key         text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        stamps := ARRAY[NEW."timestamp"];
    ELSIF TG_OP = 'DELETE' THEN
        stamps := ARRAY[OLD."timestamp"];
    ELSIF TG_OP = 'UPDATE' THEN
        stamps := ARRAY[OLD."timestamp", NEW."timestamp"];
    ELSE
        stamps := ARRAY['-infinity'::timestamptz];
    END IF;
    FOREACH stamp IN ARRAY stamps LOOP
        key := CASE WHEN TG_OP = 'TRUNCATE' THEN ' all ' ELSE event_day_key(stamp) END;
        CONTINUE WHEN key IS NULL OR strpos(noted, key) > 0;
        -- Only this block can fail; it is a subtransaction, so a failure undoes nothing of the writer's.
        BEGIN
            INSERT INTO event_changes (day) VALUES (CASE WHEN TG_OP = 'TRUNCATE' THEN '-infinity'::date
                                                         ELSE (stamp AT TIME ZONE 'UTC')::date END);
        EXCEPTION WHEN OTHERS THEN
            BEGIN
                PERFORM nextval('untracked_event_changes');
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
        END;
        noted := noted || key;
        PERFORM set_config('pulsecart.changed_event_days', noted, true);
    END LOOP;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

-- Moves the folded rows into event_change_totals; returns how many rows it folded. Concurrent folds
-- each move only the rows they deleted (the others wait on the row locks, then skip them).
CREATE FUNCTION fold_event_changes() RETURNS bigint
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH moved AS (
        DELETE FROM event_changes RETURNING day, changes
    ), by_day AS (
        SELECT day, sum(changes) AS changes, count(*) AS folded FROM moved GROUP BY day
    ), totals AS (
        INSERT INTO event_change_totals AS t (day, changes)
        SELECT day, changes FROM by_day ORDER BY day
        ON CONFLICT (day) DO UPDATE SET changes = t.changes + excluded.changes
    )
    SELECT coalesce(sum(folded), 0)::bigint FROM by_day
$$;

-- The change count of each day of [first, last] as the calling statement's snapshot sees it. A TRUNCATE and
-- a change the trigger could not record count for every day.
CREATE FUNCTION event_changes_between(first date, last date) RETURNS TABLE (day date, changes bigint)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    WITH per_day AS (   -- one pass over the rows, however many a day of single-row inserts left unfolded
        SELECT c.day, sum(c.changes) AS changes
        FROM (SELECT t.day, t.changes FROM event_change_totals t
              WHERE t.day BETWEEN first AND last OR t.day = '-infinity'
              UNION ALL
              SELECT e.day, e.changes FROM event_changes e
              WHERE e.day BETWEEN first AND last OR e.day = '-infinity') AS c
        GROUP BY c.day
    ), every_day AS (
        SELECT coalesce((SELECT p.changes FROM per_day p WHERE p.day = '-infinity'), 0)
               + (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM untracked_event_changes) AS changes
    )
    SELECT d::date, (coalesce(p.changes, 0) + (SELECT changes FROM every_day))::bigint
    FROM generate_series(first, last, interval '1 day') AS d
    LEFT JOIN per_day p ON p.day = d::date
$$;
