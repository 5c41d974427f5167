-- A dead run never looks alive. Each run records its server session (backend pid) and the advisory
-- lock it holds (the two keys of pg_advisory_lock(int, int)). A row that says 'running' is alive only
-- while that session still holds that lock: when the process died (kill -9, OOM, a lost machine) the
-- session ends and the lock is free, and readers see the run as failed ("abandoned") at once.
ALTER TABLE job_runs
    ADD COLUMN backend_pid   integer,
    ADD COLUMN lock_job_key  integer,
    ADD COLUMN lock_unit_key integer;

-- The backend pid of the session holding pulsecart's advisory lock (job_key, unit_key) in this
-- database, or NULL when it is free. pg_locks shows the two int4 keys as oids (classid, objid).
CREATE FUNCTION pulsecart_lock_holder(job_key integer, unit_key integer) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT pid FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = (job_key::bigint & 4294967295)::oid
      AND objid = (unit_key::bigint & 4294967295)::oid
    LIMIT 1
$$;

-- A 'running' row whose session no longer holds its lock. Rows written before this migration
-- (no backend pid) cannot be checked and keep their status until the next run of their unit reaps them.
CREATE FUNCTION job_run_abandoned(run job_runs) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN run.status <> 'running' OR run.backend_pid IS NULL THEN false
                ELSE pulsecart_lock_holder(run.lock_job_key, run.lock_unit_key) IS DISTINCT FROM run.backend_pid
           END
$$;

-- The status and error readers show: an abandoned run is failed.
CREATE FUNCTION job_run_status(run job_runs) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN job_run_abandoned(run) THEN 'failed' ELSE run.status END
$$;

CREATE FUNCTION job_run_error(run job_runs) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN job_run_abandoned(run)
                THEN 'abandoned: the process ended without finishing (its lock was free)'
                ELSE run.error END
$$;
