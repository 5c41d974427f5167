-- pulsecart's own tables, in its own schema (the first entry of the migration's search_path, `pulsecart` by
-- default). A database migrated by an earlier pulsecart (its tables in public) has this file's objects
-- moved into the schema instead (pulsecart_cli/migrations.py, LEGACY_OBJECTS). The application's tables (events, event_aggregates, daily_metrics, personalization_scores) live
-- in `public`; `db migrate` creates or adopts them after this file (pulsecart_cli/adopt.py).

-- The run ledger: one row per attempt of any job, whoever started it. A 'running' row is alive only while
-- its server session (backend_pid) still holds its advisory lock (lock_job_key, lock_unit_key): see
-- job_run_status. `pulsecart forget` writes 'forgotten' rows.
CREATE TABLE job_runs (
    id             bigserial PRIMARY KEY,
    job            text NOT NULL,
    run_date       date,
    target         text,
    status         text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'forgotten')),
    trigger        text NOT NULL CHECK (trigger IN ('manual', 'airflow', 'cron')),
    airflow_run_id text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    rows_written   bigint,
    details        jsonb NOT NULL DEFAULT '{}',
    error          text,
    host           text NOT NULL,
    pid            integer,
    version        text NOT NULL,
    backend_pid    integer,
    lock_job_key   integer,
    lock_unit_key  integer
);
CREATE INDEX job_runs_job_date_idx ON job_runs (job, run_date, started_at DESC);
CREATE INDEX job_runs_running_idx ON job_runs (job) WHERE status = 'running';

-- Scores as of D, one row per user and day; public.personalization_scores shows the current day's.
CREATE TABLE personalization_score_history (
    user_id     text NOT NULL,
    as_of       date NOT NULL,
    score       bigint NOT NULL,
    computed_at timestamptz NOT NULL,
    PRIMARY KEY (as_of, user_id)
);

-- Scores as of D read the counts of D-6 .. D. aggregated_days records, per aggregated day, a version of
-- its counts and the versions its scores were computed from, so a change to one day's counts reaches the
-- as-of days that read it, and `status` can say exactly which scores are stale.
CREATE SEQUENCE aggregate_counts_version;
CREATE TABLE aggregated_days (
    day            date PRIMARY KEY,
    -- A new value from aggregate_counts_version whenever the day's event_aggregates change.
    counts_version bigint NOT NULL,
    -- The newest counts_version among D-6 .. D when the scores as of D were computed; NULL: not known.
    scores_from    bigint
);

-- Dead-lettered messages that cannot be republished, kept for a person to review.
CREATE TABLE dead_letter_quarantine (
    id                  bigserial PRIMARY KEY,
    dead_letter_topic   text NOT NULL,
    original_topic      text NOT NULL,
    message_id          text NOT NULL,
    data                bytea NOT NULL,
    attributes          jsonb NOT NULL DEFAULT '{}',
    ordering_key        text NOT NULL DEFAULT '',
    publish_time        timestamptz,
    reason              text NOT NULL,
    quarantined_at      timestamptz NOT NULL DEFAULT now(),
    status              text NOT NULL DEFAULT 'quarantined'
                        CHECK (status IN ('quarantined', 'replayed', 'discarded')),
    status_changed_at   timestamptz,
    status_note         text,
    replayed_message_id text,
    UNIQUE (dead_letter_topic, message_id)
);
CREATE INDEX dead_letter_quarantine_status_idx ON dead_letter_quarantine (status, original_topic);

-- How much one event of a kind adds to a personalization score; one definition for every statement.
-- A single SQL expression, so the planner inlines it: it costs what the CASE costs.
CREATE FUNCTION event_weight(event_type text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE event_type
           WHEN 'order.placed' THEN 10
           WHEN 'cart.item_added' THEN 3
           WHEN 'product.viewed' THEN 1
           ELSE 0
       END;

-- Score steps of different runs take this transaction-scoped lock one at a time, after their counts
-- are written: each then sees every count committed before it (READ COMMITTED).
CREATE FUNCTION aggregate_scores_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 7311002;

-- The newest counts version among the days the scores as of `as_of` read (as_of - 6 .. as_of): the
-- scores are fresh when aggregated_days.scores_from is at least this.
CREATE FUNCTION scores_input_version(as_of date) RETURNS bigint
LANGUAGE sql STABLE
RETURN (SELECT max(counts_version) FROM aggregated_days WHERE day BETWEEN as_of - 6 AND as_of);

-- An order total as numeric, or NULL (counted in invalid_order_totals) when numeric cannot hold it
-- (1e400000, 1e-400000) or when it is so large that a day's sum of such totals could overflow
-- (numeric holds less than 1e131072; 2^63 totals below 1e131053 add up to less than that).
-- metrics.sql calls it only for long or exponent totals: catching an error costs a subtransaction.
CREATE FUNCTION numeric_or_null(total text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    value numeric;
BEGIN
    value := total::numeric;
    RETURN CASE WHEN abs(value) < 1e131053 THEN value END;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END $$;

-- The backend pid of the session holding pulsecart's advisory lock (job_key, unit_key) in this
-- database, or NULL when it is free. pg_locks shows the two int4 keys as oids (classid, objid).
CREATE FUNCTION pulsecart_lock_holder(job_key integer, unit_key integer) RETURNS integer
LANGUAGE sql STABLE
RETURN (SELECT pid FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 2
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid = (job_key::bigint & 4294967295)::oid
          AND objid = (unit_key::bigint & 4294967295)::oid
        LIMIT 1);

-- A 'running' row whose session no longer holds its lock.
CREATE FUNCTION job_run_abandoned(run job_runs) RETURNS boolean
LANGUAGE sql STABLE
RETURN CASE WHEN run.status <> 'running' OR run.backend_pid IS NULL THEN false
            ELSE pulsecart_lock_holder(run.lock_job_key, run.lock_unit_key) IS DISTINCT FROM run.backend_pid
       END;

-- The status and error readers show: an abandoned run is failed.
CREATE FUNCTION job_run_status(run job_runs) RETURNS text
LANGUAGE sql STABLE
RETURN CASE WHEN job_run_abandoned(run) THEN 'failed' ELSE run.status END;

CREATE FUNCTION job_run_error(run job_runs) RETURNS text
LANGUAGE sql STABLE
RETURN CASE WHEN job_run_abandoned(run)
            THEN 'abandoned: the process ended without finishing (its lock was free)'
            ELSE run.error END;

-- Counts or scores changed by anything but pulsecart's aggregate (a manual fix, a DELETE, a TRUNCATE):
-- changed counts get a new version, so the scores that read them show as stale; changed scores lose
-- their record of what they were computed from, so they show as stale too. Once per day and transaction
-- (the transaction holds the scores lock until it ends, so no score step reads its changes half-way);
-- a row trigger with a cheap WHEN, so aggregate's own writes pay nothing for it. Attached to
-- personalization_score_history here and to public.event_aggregates by `db migrate`.
CREATE FUNCTION note_change_outside_aggregate() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    counts  constant boolean := TG_TABLE_NAME = 'event_aggregates';
    noted   constant text := 'pulsecart.changed_' || TG_TABLE_NAME;
    changed date;
BEGIN
    PERFORM pg_advisory_xact_lock(aggregate_scores_lock_key());
    IF TG_OP = 'TRUNCATE' AND counts THEN
        UPDATE aggregated_days SET counts_version = nextval('aggregate_counts_version');
    ELSIF TG_OP = 'TRUNCATE' THEN
        UPDATE aggregated_days SET scores_from = NULL;
    ELSE
        FOREACH changed IN ARRAY ARRAY[(to_jsonb(OLD) ->> TG_ARGV[0])::date, (to_jsonb(NEW) ->> TG_ARGV[0])::date] LOOP
            CONTINUE WHEN changed IS NULL OR strpos(coalesce(current_setting(noted, true), ''), changed::text) > 0;
            IF counts THEN
                INSERT INTO aggregated_days (day, counts_version) VALUES (changed, nextval('aggregate_counts_version'))
                ON CONFLICT (day) DO UPDATE SET counts_version = excluded.counts_version;
            ELSE
                UPDATE aggregated_days SET scores_from = NULL WHERE day = changed;
            END IF;
            PERFORM set_config(noted, coalesce(current_setting(noted, true), '') || changed || ' ', true);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER changed_outside_aggregate
AFTER INSERT OR UPDATE OR DELETE ON personalization_score_history FOR EACH ROW
WHEN (current_setting('pulsecart.aggregating', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION note_change_outside_aggregate('as_of');

CREATE TRIGGER truncated_outside_aggregate
AFTER TRUNCATE ON personalization_score_history FOR EACH STATEMENT
EXECUTE FUNCTION note_change_outside_aggregate('as_of');
