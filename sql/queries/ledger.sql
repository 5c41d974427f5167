-- name: try_lock
SELECT pg_try_advisory_lock(%(job_key)s, %(unit_key)s);

-- name: wait_lock
SELECT pg_advisory_lock(%(job_key)s, %(unit_key)s);

-- name: unlock
SELECT pg_advisory_unlock(%(job_key)s, %(unit_key)s);

-- name: set_application_name
-- What a DBA sees in pg_stat_activity: `pulsecart aggregate 2025-03-04`.
SELECT set_config('application_name', %(name)s, false);

-- name: holder
-- Who holds the unit's lock: the server session (backend pid, application_name) and, when it is a
-- run of this unit, its ledger row. No row: the lock was released meanwhile.
SELECT h.backend_pid, a.application_name, r.id, r.host, r.pid, r.trigger, r.started_at
FROM (SELECT pulsecart_lock_holder(%(job_key)s, %(unit_key)s) AS backend_pid) h
LEFT JOIN pg_stat_activity a ON a.pid = h.backend_pid
LEFT JOIN LATERAL (
    SELECT id, host, pid, trigger, started_at
    FROM job_runs
    WHERE job = %(job)s AND run_date IS NOT DISTINCT FROM %(run_date)s
      AND (%(run_date)s::date IS NOT NULL OR target IS NOT DISTINCT FROM %(target)s) AND status = 'running'
      AND (backend_pid = h.backend_pid OR backend_pid IS NULL)
    ORDER BY id DESC
    LIMIT 1
) r ON true
WHERE h.backend_pid IS NOT NULL;

-- name: reap_dead
-- Called while holding the unit's lock: any run still marked running cannot be alive. When it ended
-- is unknown, so finished_at stays NULL (not the time someone noticed). A day's unit is its job and day,
-- whatever the target (a forget of the day takes the same lock).
UPDATE job_runs
SET status = 'failed',
    error = 'abandoned: the process ended without finishing (its lock was free)'
WHERE job = %(job)s AND run_date IS NOT DISTINCT FROM %(run_date)s
  AND (%(run_date)s::date IS NOT NULL OR target IS NOT DISTINCT FROM %(target)s) AND status = 'running'
RETURNING id;

-- name: start
-- backend_pid and the lock's keys let readers tell a live run from a dead one (job_run_status).
INSERT INTO job_runs (job, run_date, target, status, trigger, airflow_run_id, host, pid, version,
                      backend_pid, lock_job_key, lock_unit_key)
VALUES (%(job)s, %(run_date)s, %(target)s, 'running', %(trigger)s, %(airflow_run_id)s, %(host)s, %(pid)s, %(version)s,
        pg_backend_pid(), %(job_key)s, %(unit_key)s)
RETURNING id;

-- name: finish
-- Also run inside the unit's own transaction (its success commits with its work): clock_timestamp(),
-- since now() would be when that transaction began. A failure written after a signal finds no row when
-- that transaction committed after all: the row lock and the condition let the server decide.
UPDATE job_runs
SET status = %(status)s, finished_at = clock_timestamp(), rows_written = %(rows)s, details = %(details)s, error = %(error)s
WHERE id = %(id)s AND status = 'running'
RETURNING id;

-- name: forget
-- A unit dropped before it could finish (its work rolled back): the run never happened.
DELETE FROM job_runs WHERE id = %(id)s;

-- name: outcome
-- A run's row as a new connection sees it: 'succeeded' (or a forget's 'forgotten') only if the run's
-- own transaction committed.
SELECT status, target, rows_written, details, extract(epoch FROM finished_at - started_at)::float8
FROM job_runs WHERE id = %(id)s;
