-- Scores as of D read the counts of D-6 .. D. aggregated_days records, per aggregated day, a version of
-- its counts and the versions its scores were computed from, so a change to one day's counts reaches the
-- as-of days that read it, and `status` can say exactly which scores are stale.
CREATE SEQUENCE aggregate_counts_version;

CREATE TABLE aggregated_days (
    day            date PRIMARY KEY,
    -- A new value from aggregate_counts_version whenever the day's event_aggregates change.
    counts_version bigint NOT NULL,
    -- The newest counts_version among D-6 .. D when the scores as of D were computed.
    -- NULL: not known (written by an earlier pulsecart), so stale until recomputed.
    scores_from    bigint
);

-- Every day an earlier pulsecart aggregated: what its scores were computed from is not known.
INSERT INTO aggregated_days (day, counts_version)
SELECT day, nextval('aggregate_counts_version')
FROM (SELECT run_date AS day FROM job_runs WHERE job = 'aggregate' AND status = 'succeeded' AND run_date IS NOT NULL
      UNION SELECT as_of FROM personalization_score_history
      UNION SELECT date FROM event_aggregates) AS days
ORDER BY day;

-- Score steps of different runs take this transaction-scoped lock one at a time, after their counts
-- are written: each then sees every count committed before it (READ COMMITTED).
CREATE FUNCTION aggregate_scores_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 7311002;

-- Counts or scores changed by anything but pulsecart's aggregate (a manual fix, a DELETE, a TRUNCATE):
-- changed counts get a new version, so the scores that read them show as stale; changed scores lose
-- their record of what they were computed from, so they show as stale too. Once per day and transaction
-- (the transaction holds the scores lock until it ends, so no score step reads its changes half-way);
-- a row trigger with a cheap WHEN, so aggregate's own writes pay nothing for it.
CREATE FUNCTION note_change_outside_aggregate() RETURNS trigger
LANGUAGE plpgsql AS $$
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
AFTER INSERT OR UPDATE OR DELETE ON event_aggregates FOR EACH ROW
WHEN (current_setting('pulsecart.aggregating', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION note_change_outside_aggregate('date');

CREATE TRIGGER truncated_outside_aggregate
AFTER TRUNCATE ON event_aggregates FOR EACH STATEMENT
EXECUTE FUNCTION note_change_outside_aggregate('date');

CREATE TRIGGER changed_outside_aggregate
AFTER INSERT OR UPDATE OR DELETE ON personalization_score_history FOR EACH ROW
WHEN (current_setting('pulsecart.aggregating', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION note_change_outside_aggregate('as_of');

CREATE TRIGGER truncated_outside_aggregate
AFTER TRUNCATE ON personalization_score_history FOR EACH STATEMENT
EXECUTE FUNCTION note_change_outside_aggregate('as_of');

-- The app-facing scores are the history as of the newest aggregated day that is not in the future:
-- derived, never a second copy that could be left behind or moved to a mistyped day.
DROP TABLE personalization_scores;
DROP TABLE personalization_scores_state;
CREATE VIEW personalization_scores AS
SELECT h.user_id, h.score, h.computed_at, h.as_of
FROM personalization_score_history h
WHERE h.as_of = (SELECT max(day) FROM aggregated_days WHERE day <= (now() AT TIME ZONE 'UTC')::date);
