-- `pulsecart forget JOB --date D` removes a day's results, as if the job had never run for it (a mistyped
-- --date, say). Its ledger row says 'forgotten': the runs before it no longer count as the day's success.
ALTER TABLE job_runs DROP CONSTRAINT job_runs_status_check;
ALTER TABLE job_runs ADD CONSTRAINT job_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'forgotten'));

-- The newest counts version among the days the scores as of `as_of` read (as_of - 6 .. as_of): the
-- scores are fresh when aggregated_days.scores_from is at least this.
CREATE FUNCTION scores_input_version(as_of date) RETURNS bigint
LANGUAGE sql STABLE
RETURN (SELECT max(counts_version) FROM aggregated_days WHERE day BETWEEN as_of - 6 AND as_of);
