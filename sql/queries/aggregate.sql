-- Each table's slice for day D is replaced exactly, by difference: one full join of the fresh rows
-- with the stored ones finds the rows that no longer occur (deleted), changed (updated) and new
-- (inserted). A rerun on unchanged data writes nothing. A first run (nothing stored for D: the nightly
-- run) skips the join and inserts the fresh rows as they are. Each statement returns
-- (fresh rows, deleted, updated, inserted).
-- Whether anything is stored for D is asked of the key's index (stored_any: ORDER BY the key, LIMIT 1).
-- A plain EXISTS lets the planner pick a sequential scan when its statistics say D is common (a day
-- forgotten or dropped since the last ANALYZE), and that reads the whole table when nothing is stored:
-- 120 ms at 12 days of 1M events a day, growing with the history.
-- Inserts are sorted so the index grows page by page; by bytes (COLLATE "C"), which sorts text several
-- times faster than a locale and gives the same pages for ASCII ids. Any order would be correct.

-- name: begin_day
-- The day's groupings and joins (a few hundred thousand rows) fit in memory instead of spilling:
-- measured 15-25 percent faster at 1M events a day.
-- No nested loops: the statements below join a day's slice (up to a million rows) with its diff. When the
-- table's statistics have not seen that day yet (a day just written, rescored before autovacuum's next
-- ANALYZE), the planner estimates the slice at one row and loops over the whole diff for each row of it:
-- measured over 5 minutes instead of 2 seconds at 100,000 events a day. Hash joins are linear either way.
-- The last setting tells the triggers on event_aggregates and the score history that these writes are
-- aggregate's own (recorded below, not a change from outside). All last until the transaction ends.
SET LOCAL work_mem = '64MB';
SET LOCAL enable_nestloop = off;
SET LOCAL pulsecart.aggregating = 'on';

-- name: replace_counts
WITH stored AS NOT MATERIALIZED (
    SELECT user_id, event_type, event_count FROM event_aggregates WHERE date = %(day)s
), stored_any AS (
    SELECT FROM event_aggregates WHERE date = %(day)s ORDER BY user_id, event_type LIMIT 1
), fresh AS MATERIALIZED (
    -- One UTC day as a half-open range on the indexed timestamp column.
    SELECT user_id, event_type, count(*) AS event_count
    FROM events
    WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
    GROUP BY user_id, event_type
), diff AS MATERIALIZED (
    SELECT coalesce(f.user_id, s.user_id) AS user_id, coalesce(f.event_type, s.event_type) AS event_type,
           f.event_count AS new_count, s.event_count AS old_count
    FROM fresh f
    FULL JOIN stored s ON s.user_id = f.user_id AND s.event_type = f.event_type
    WHERE f.event_count IS DISTINCT FROM s.event_count AND EXISTS (SELECT FROM stored_any)
), deleted AS (
    DELETE FROM event_aggregates a USING diff d
    WHERE a.date = %(day)s AND a.user_id = d.user_id AND a.event_type = d.event_type AND d.new_count IS NULL
    RETURNING 1
), updated AS (
    UPDATE event_aggregates a SET event_count = d.new_count FROM diff d
    WHERE a.date = %(day)s AND a.user_id = d.user_id AND a.event_type = d.event_type
      AND d.new_count IS NOT NULL AND d.old_count IS NOT NULL
    RETURNING 1
), inserted AS (
    INSERT INTO event_aggregates (date, user_id, event_type, event_count)
    SELECT %(day)s::date, user_id, event_type, new_count FROM (
        SELECT user_id, event_type, new_count FROM diff WHERE old_count IS NULL
        UNION ALL
        SELECT user_id, event_type, event_count FROM fresh WHERE NOT EXISTS (SELECT FROM stored_any)
    ) AS new_rows
    ORDER BY user_id COLLATE "C", event_type COLLATE "C"
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM deleted), (SELECT count(*) FROM updated),
       (SELECT count(*) FROM inserted),
       -- D's change count in the snapshot that read D's events (see 0002_event_change_tracking.sql)
       (SELECT changes FROM event_changes_between(%(day)s, %(day)s)),
       (SELECT coalesce(sum(event_count), 0) FROM fresh)::bigint;

-- name: try_lock_scores
SELECT pg_try_advisory_xact_lock(aggregate_scores_lock_key());

-- name: lock_scores
SELECT pg_advisory_xact_lock(aggregate_scores_lock_key());

-- name: record_counts
-- Under the scores lock: D is aggregated (with its number of events), and its counts get a new version
-- when they changed.
INSERT INTO aggregated_days (day, counts_version, events)
VALUES (%(day)s, nextval('aggregate_counts_version'), %(events)s)
ON CONFLICT (day) DO UPDATE
SET counts_version = CASE WHEN %(counts_changed)s THEN excluded.counts_version ELSE aggregated_days.counts_version END,
    events = excluded.events
WHERE %(counts_changed)s OR aggregated_days.events IS DISTINCT FROM excluded.events;

-- name: scores_fresh
-- Whether the stored scores as of D were computed from the counts of D-6 .. D as they are now.
SELECT coalesce(a.scores_from >= scores_input_version(a.day), false)
FROM aggregated_days a
WHERE a.day = %(day)s;

-- name: stale_later_days
-- The aggregated as-of days D+1 .. D+6 whose scores read counts that changed since they were computed,
-- except those this run will aggregate itself later.
SELECT a.day
FROM aggregated_days a
WHERE a.day > %(day)s AND a.day <= %(day)s::date + 6
  AND NOT a.day = ANY(%(left_to_run)s::date[])
  AND coalesce(a.scores_from < scores_input_version(a.day), true)
ORDER BY a.day;

-- name: scored_users
SELECT count(*) FROM personalization_score_history WHERE as_of = %(day)s;

-- name: record_scores
UPDATE aggregated_days a
SET scores_from = scores_input_version(a.day)
WHERE a.day = %(day)s;

-- name: replace_history
-- Set-based throughout: every check below is a join, never a subquery run once per user. A correlated
-- EXISTS walked event_aggregates once per user active on D-7 but not on D: on a simulated production day
-- (20,000 users, 50,000 events a day) 67 s as sequential scans, 1.2 s as index-only loops, where the steps
-- around it took 0.4 s. tests/test_score_plans.py checks the plans of a day the statistics have not seen.
WITH stored AS NOT MATERIALIZED (
    SELECT user_id, score FROM personalization_score_history WHERE as_of = %(day)s
), stored_any AS (
    SELECT FROM personalization_score_history WHERE as_of = %(day)s ORDER BY user_id LIMIT 1
), carried AS MATERIALIZED (
    -- The scores as of D from those as of D-1 (fresh: computed from the counts as they are now):
    -- + D's points - D-7's points.
    -- sources: 1 scored as of D-1, 2 active on D, 4 active on D-7.
    SELECT user_id, sum(points) AS score, bit_or(source) AS sources
    FROM (
        SELECT user_id, score AS points, 1 AS source
        FROM personalization_score_history WHERE as_of = %(day)s::date - 1
        UNION ALL
        SELECT user_id, event_count * event_weight(event_type) * CASE WHEN date = %(day)s THEN 1 ELSE -1 END,
               CASE WHEN date = %(day)s THEN 2 ELSE 4 END
        FROM event_aggregates WHERE date = %(day)s OR date = %(day)s::date - 7
    ) AS changes
    WHERE %(from_previous)s
    GROUP BY user_id
), fresh AS MATERIALIZED (
    -- Score as of D: the weighted event counts of the seven days D-6 .. D (weights: event_weight()).
    SELECT user_id, sum(event_count * event_weight(event_type)) AS score
    FROM event_aggregates
    WHERE date BETWEEN %(day)s::date - 6 AND %(day)s::date AND NOT %(from_previous)s
    GROUP BY user_id
    UNION ALL
    -- Or carried forward: a user scored as of D-1 or active on D keeps a score ...
    SELECT user_id, score FROM carried WHERE sources & 2 = 2 OR sources = 1
    UNION ALL
    -- ... and one scored as of D-1 who was active on D-7 but not on D only if active on one of D-6 .. D-1:
    -- a semi-join of those users with the six days' counts, hashed (begin_day rules out nested loops):
    -- one read of the six days' index range, whatever the number of such users.
    SELECT user_id, score FROM carried
    WHERE sources = 5
      AND user_id IN (SELECT a.user_id FROM event_aggregates a
                      WHERE a.date BETWEEN %(day)s::date - 6 AND %(day)s::date - 1 AND %(from_previous)s)
), diff AS MATERIALIZED (
    SELECT coalesce(f.user_id, s.user_id) AS user_id, f.score AS new_score, s.score AS old_score
    FROM fresh f
    FULL JOIN stored s ON s.user_id = f.user_id
    WHERE f.score IS DISTINCT FROM s.score AND EXISTS (SELECT FROM stored_any)
), deleted AS (
    DELETE FROM personalization_score_history h USING diff d
    WHERE h.as_of = %(day)s AND h.user_id = d.user_id AND d.new_score IS NULL
    RETURNING 1
), updated AS (
    UPDATE personalization_score_history h SET score = d.new_score, computed_at = now() FROM diff d
    WHERE h.as_of = %(day)s AND h.user_id = d.user_id AND d.new_score IS NOT NULL AND d.old_score IS NOT NULL
    RETURNING 1
), inserted AS (
    INSERT INTO personalization_score_history (as_of, user_id, score, computed_at)
    SELECT %(day)s::date, user_id, new_score, now() FROM (
        SELECT user_id, new_score FROM diff WHERE old_score IS NULL
        UNION ALL
        SELECT user_id, score FROM fresh WHERE NOT EXISTS (SELECT FROM stored_any)
    ) AS new_rows
    ORDER BY user_id COLLATE "C"
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM deleted), (SELECT count(*) FROM updated),
       (SELECT count(*) FROM inserted);

-- name: unaggregated_inputs
-- The days among D-6 .. D-1 that D's scores read but that hold events and were never aggregated (from the
-- first aggregated day on: the history before pulsecart is left alone): D's scores leave their events out.
SELECT d::date
FROM generate_series(%(day)s::date - 6, %(day)s::date - 1, interval '1 day') AS d
WHERE d >= (SELECT min(day) FROM aggregated_days)
  AND NOT EXISTS (SELECT FROM aggregated_days a WHERE a.day = d::date)
  AND EXISTS (SELECT FROM events e WHERE e."timestamp" >= d::timestamp AT TIME ZONE 'UTC'
                                     AND e."timestamp" < (d + interval '1 day')::timestamp AT TIME ZONE 'UTC')
ORDER BY 1;

-- name: current_as_of
-- The day personalization_scores (a view) shows: the newest aggregated day that is not in the future.
SELECT max(day) FROM aggregated_days WHERE day <= (now() AT TIME ZONE 'UTC')::date;

-- name: forget_day
-- Under the scores lock: D as if never aggregated. The as-of days D+1 .. D+6 read D's counts: when there
-- were any, their scores lose their record (stale) until rescored. Returns (counts removed, scores removed).
WITH counts AS (
    DELETE FROM event_aggregates WHERE date = %(day)s RETURNING 1
), scores AS (
    DELETE FROM personalization_score_history WHERE as_of = %(day)s RETURNING 1
), record AS (
    DELETE FROM aggregated_days WHERE day = %(day)s
), later AS (
    UPDATE aggregated_days SET scores_from = NULL
    WHERE day > %(day)s AND day <= %(day)s::date + 6 AND EXISTS (SELECT FROM counts)
)
SELECT (SELECT count(*) FROM counts), (SELECT count(*) FROM scores);

-- name: prunable_days
-- As-of days whose scores `prune` may remove: older than the cutoff, and not the day before the oldest kept
-- one (the next day's scores carry forward from it), and never the current scores' day.
SELECT day FROM aggregated_days
WHERE day < %(cutoff)s::date - 1 AND scores_pruned_at IS NULL
  AND day < coalesce((SELECT max(day) FROM aggregated_days WHERE day <= (now() AT TIME ZONE 'UTC')::date), 'infinity')
ORDER BY day;

-- name: prune_day
-- Under the scores lock: the scores as of D go; D's record says so (scores_from NULL: a rerun rebuilds them).
WITH removed AS (
    DELETE FROM personalization_score_history WHERE as_of = %(day)s RETURNING 1
), record AS (
    UPDATE aggregated_days SET scores_from = NULL, scores_pruned_at = now() WHERE day = %(day)s
)
SELECT count(*) FROM removed;
