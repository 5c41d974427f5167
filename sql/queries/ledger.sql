-- name: try_lock
SELECT pg_try_advisory_lock(%(job_key)s, %(unit_key)s);

-- name: wait_lock
SELECT pg_advisory_lock(%(job_key)s, %(unit_key)s);

-- name: unlock
SELECT pg_advisory_unlock(%(job_key)s, %(unit_key)s);

-- name: holder
SELECT id, host, pid, trigger, started_at
FROM job_runs
WHERE job = %(job)s AND run_date IS NOT DISTINCT FROM %(run_date)s
  AND target IS NOT DISTINCT FROM %(target)s AND status = 'running'
ORDER BY id DESC
LIMIT 1;

-- name: reap_dead
-- Called while holding the unit's lock: any run still marked running cannot be alive.
UPDATE job_runs
SET status = 'failed', finished_at = now(),
    error = 'abandoned: the process ended without finishing (its lock was free)'
WHERE job = %(job)s AND run_date IS NOT DISTINCT FROM %(run_date)s
  AND target IS NOT DISTINCT FROM %(target)s AND status = 'running'
RETURNING id;

-- name: start
INSERT INTO job_runs (job, run_date, target, status, trigger, airflow_run_id, host, pid, version)
VALUES (%(job)s, %(run_date)s, %(target)s, 'running', %(trigger)s, %(airflow_run_id)s, %(host)s, %(pid)s, %(version)s)
RETURNING id;

-- name: finish
UPDATE job_runs
SET status = %(status)s, finished_at = now(), rows_written = %(rows)s, details = %(details)s, error = %(error)s
WHERE id = %(id)s;

-- name: forget
-- A unit dropped before it could finish (its work rolled back): the run never happened.
DELETE FROM job_runs WHERE id = %(id)s;
