-- The insert trigger loses its WHEN clause: PostgreSQL prepares a trigger's WHEN expression anew for every
-- statement, and that expression (its text concatenations are SQL functions, inlined on every preparation)
-- cost a transaction of single-row INSERTs about 13 us a row. note_event_change() now answers the common
-- case itself (the row's day is noted already) in about 2 us, and only the first row of a transaction and
-- day calls record_event_changes(). `db migrate` replaces the trigger (pulsecart_cli/adopt.py). Without a
-- WHEN clause, the writer's role needs no EXECUTE on anything of pulsecart's: a trigger's function is not
-- checked against the writer.

-- Records the days of ``stamps`` this transaction has not noted yet: one event_changes row each, and the
-- days' keys in the transaction-local setting (see note_event_change in 0002). '-infinity' stands for
-- every day (a TRUNCATE). It never raises; a change it cannot record advances untracked_event_changes.
CREATE FUNCTION record_event_changes(stamps timestamptz[]) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    noted text := coalesce(current_setting('pulsecart.changed_event_days', true), '');
    stamp timestamptz;
    key   text;
    writers_lock_timeout text;
BEGIN
    FOREACH stamp IN ARRAY stamps LOOP
        key := CASE WHEN stamp = '-infinity' THEN ' all ' ELSE event_day_key(stamp) END;
        CONTINUE WHEN key IS NULL OR strpos(noted, key) > 0;
        -- Only this block can fail; it is a subtransaction, so a failure undoes nothing of the writer's. A lock
        -- on event_changes (a DBA's CREATE INDEX) holds the writer up 50 ms at most, then counts as a change
        -- it could not record; the writer's own lock_timeout is back in force after the INSERT.
        BEGIN
            writers_lock_timeout := current_setting('lock_timeout');
            PERFORM set_config('lock_timeout', '50ms', true);
            INSERT INTO event_changes (day) VALUES (CASE WHEN stamp = '-infinity' THEN '-infinity'::date
                                                         ELSE (stamp AT TIME ZONE 'UTC')::date END);
            PERFORM set_config('lock_timeout', writers_lock_timeout, true);
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
END
$$;
-- Runs in the writer's transaction, as its owner (SECURITY DEFINER), and never raises.
CREATE OR REPLACE FUNCTION note_event_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- event_day_key(), written out: one call less for every row
        IF strpos(coalesce(current_setting('pulsecart.changed_event_days', true), ''),
                  CASE WHEN isfinite(NEW."timestamp")
                       THEN ' ' || ((NEW."timestamp" AT TIME ZONE 'UTC')::date - DATE '2000-01-01') || ' ' END) = 0 THEN
            PERFORM record_event_changes(ARRAY[NEW."timestamp"]);
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM record_event_changes(ARRAY[OLD."timestamp"]);
        RETURN OLD;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM record_event_changes(ARRAY[OLD."timestamp", NEW."timestamp"]);
        RETURN NEW;
    END IF;
    PERFORM record_event_changes(ARRAY['-infinity'::timestamptz]);
    RETURN NULL;
END
$$;
