-- name: day_states
-- Per day of [start, end]: the latest run's status, whether any run succeeded, whether D's events changed
-- since the latest successful run read them (its details' event_changes_seen against D's change count now:
-- 0002_event_change_tracking.sql), and, for a job whose registry entry has scores_from_days_before
-- (aggregate), whether the scores as of the day are stale: NULL when fresh, else the days among
-- D-reads_days_before .. D whose counts changed since the scores were computed ('{}' when that is not
-- known), when `prune` removed them, and whether the day has any events.
WITH days AS (
    SELECT d::date AS day FROM generate_series(%(start)s::date, %(end)s::date, interval '1 day') AS d
), latest AS (
    -- job_run_status: a 'running' row whose session no longer holds its lock is failed (abandoned).
    -- A forget that did not complete (failed, running) changed nothing: the runs before it tell.
    SELECT DISTINCT ON (run_date) run_date, id, job_run_status(job_runs) AS status, started_at
    FROM job_runs
    WHERE job = %(job)s AND run_date BETWEEN %(start)s AND %(end)s
      AND (target IS DISTINCT FROM 'forget' OR status = 'forgotten')
    ORDER BY run_date, id DESC
), last_success AS (
    -- A success counts until the day's results are forgotten (pulsecart forget) after it.
    SELECT DISTINCT ON (run_date) run_date, coalesce((details ->> 'event_changes_seen')::bigint, 0) AS changes_seen
    FROM job_runs r
    WHERE job = %(job)s AND status = 'succeeded' AND run_date BETWEEN %(start)s AND %(end)s
      AND NOT EXISTS (SELECT FROM job_runs f WHERE f.job = r.job AND f.run_date = r.run_date
                                              AND f.status = 'forgotten' AND f.id > r.id)
    ORDER BY run_date, id DESC
)
SELECT days.day,
       latest.status,
       latest.id,
       last_success.run_date IS NOT NULL AS ever_succeeded,
       last_success.run_date IS NOT NULL AND changed.changes > last_success.changes_seen AS late_events,
       CASE WHEN %(scores_from_days_before)s AND last_success.run_date IS NOT NULL THEN (
           SELECT CASE WHEN a.scores_from IS NULL THEN '{}'::date[]
                       ELSE nullif(array(SELECT c.day FROM aggregated_days c
                                         WHERE c.day BETWEEN a.day - %(reads_days_before)s::int AND a.day
                                           AND c.counts_version > a.scores_from
                                         ORDER BY c.day), '{}') END
           FROM (SELECT days.day) AS wanted
           LEFT JOIN aggregated_days a ON a.day = wanted.day
       ) END AS scores_stale_since,
       (SELECT a.scores_pruned_at FROM aggregated_days a WHERE a.day = days.day AND %(scores_from_days_before)s)
           AS scores_pruned_at,
       -- one index probe a day: an input day that has events and no success leaves the days reading it wrong
       EXISTS (SELECT FROM events e
               WHERE e."timestamp" >= days.day::timestamp AT TIME ZONE 'UTC'
                 AND e."timestamp" < (days.day + 1)::timestamp AT TIME ZONE 'UTC') AS has_events,
       (SELECT min(run_date) FROM job_runs WHERE job = %(job)s AND status = 'succeeded') AS first_success,
       -- events timestamped before year 2 (or -infinity) are junk, not the start of the history
       (SELECT min("timestamp") FROM events WHERE "timestamp" >= '0002-01-01T00:00Z') AS first_event
FROM days
JOIN event_changes_between(%(start)s, %(end)s) AS changed ON changed.day = days.day
LEFT JOIN latest ON latest.run_date = days.day
LEFT JOIN last_success ON last_success.run_date = days.day
ORDER BY days.day;

-- name: last_success
-- The day's latest success, unless its results were forgotten since.
SELECT id, started_at, finished_at, trigger
FROM (SELECT id, status, started_at, finished_at, trigger
      FROM job_runs
      WHERE job = %(job)s AND run_date = %(day)s AND status IN ('succeeded', 'forgotten')
      ORDER BY id DESC
      LIMIT 1) AS latest
WHERE status = 'succeeded';

-- name: newest_event
-- An event timestamped in year 9999 (or infinity) is junk, not the consumer's progress.
SELECT max("timestamp") FROM events WHERE "timestamp" < '9999-01-01T00:00Z';

-- name: recent_runs
-- An abandoned run (see job_run_status) is failed, its duration unknown (finished_at is NULL).
SELECT id, job, run_date, target, job_run_status(job_runs) AS status, trigger, airflow_run_id, started_at, finished_at,
       extract(epoch FROM finished_at - started_at)::float8 AS duration_s, rows_written,
       split_part(job_run_error(job_runs), E'\n', 1) AS error
FROM job_runs
WHERE (%(job)s::text IS NULL OR job = %(job)s)
  AND (%(status)s::text IS NULL OR job_run_status(job_runs) = %(status)s)
  AND (%(day)s::date IS NULL OR run_date = %(day)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: day_volume
-- D's events now: an index range count.
SELECT count(*) FROM events WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s;

-- name: accepted
-- Whether an operator accepted D as it is (check-complete --min-share 0), and when.
SELECT max(started_at) FROM job_runs
WHERE job = 'check-complete' AND run_date = %(day)s AND target = 'accepted' AND status = 'succeeded';

-- name: accept
INSERT INTO job_runs (job, run_date, target, status, trigger, airflow_run_id, finished_at, rows_written, details,
                      host, pid, version)
VALUES ('check-complete', %(day)s, 'accepted', 'succeeded', %(trigger)s, %(airflow_run_id)s, clock_timestamp(),
        %(events)s, %(details)s, %(host)s, %(pid)s, %(version)s)
RETURNING id;

-- name: day_figures
-- Each day of [start, end] with what pulsecart recorded of it (events as aggregated, orders and revenue as
-- computed), and the same figures of the same weekday in the `weeks` weeks before, where recorded.
WITH recorded AS (
    SELECT d::date AS day, a.events, m.orders_placed AS orders, m.revenue
    FROM generate_series(%(start)s::date - 7 * %(weeks)s, %(end)s::date, interval '1 day') AS d
    LEFT JOIN aggregated_days a ON a.day = d::date
    LEFT JOIN daily_metrics m ON m.date = d::date
)
SELECT r.day, r.events, r.orders, r.revenue, coalesce(u.events, '{}') AS usual_events,
       coalesce(u.orders, '{}') AS usual_orders, coalesce(u.revenue, '{}') AS usual_revenue
FROM recorded r
CROSS JOIN LATERAL (
    SELECT array_agg(w.events ORDER BY w.day) FILTER (WHERE w.events IS NOT NULL) AS events,
           array_agg(w.orders ORDER BY w.day) FILTER (WHERE w.orders IS NOT NULL) AS orders,
           array_agg(w.revenue ORDER BY w.day) FILTER (WHERE w.revenue IS NOT NULL) AS revenue
    FROM recorded w
    WHERE w.day >= r.day - 7 * %(weeks)s AND w.day < r.day AND (r.day - w.day) %% 7 = 0
) AS u
WHERE r.day >= %(start)s;
