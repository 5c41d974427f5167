"""What the PulseCart DAGs share: they only build `pulsecart` commands; the CLI does the work.

Nothing here touches a database, Pub/Sub or a secret at parse time: the connection, the variables
and the dates are Jinja templates rendered when a task runs.
"""

import os
from datetime import timedelta

from airflow.providers.standard.sensors.date_time import DateTimeSensor
from pulsecart_alerts import FailureEmail, LatenessEmail, PulsecartCommand, PulsecartSensor

# Airflow Variable `pulsecart_cli`: the path to the CLI on the workers (default: `pulsecart` on PATH).
CLI = "{{ var.value.get('pulsecart_cli', 'pulsecart') }}"

# The day before the run's own day: a cron schedule fires at the end of the day it processes
# (the 2025-03-04 02:00 run has ds 2025-03-04 and processes 2025-03-03). A manual run with no
# logical date processes yesterday (UTC).
PRIOR_DAY = "{% if ds is defined and ds %}{{ macros.ds_add(ds, -1) }}{% else %}yesterday{% endif %}"
# The run's own day, or (a manual run with no logical date) the day it was started.
_RUN_DAY = "(ds if ds is defined and ds else dag_run.run_after.strftime('%Y-%m-%d'))"
# The prior day as a date (for alerts: a manual run's "yesterday" is the day before it was started).
DAY = "{{ macros.ds_add(" + _RUN_DAY + ", -1) }}"

# Airflow Variable `pulsecart_heal_days` (default 30): how far back the nightly healing looks, to DAY.
HEAL_FROM = "{{ macros.ds_add(" + _RUN_DAY + ", -(var.value.get('pulsecart_heal_days', '30') | int)) }}"
# Airflow Variable `pulsecart_min_share` (default 0.3): a day with less than this share of its usual events
# (the median of the same weekday over the four weeks before) keeps the sensor waiting.
MIN_SHARE = "{{ var.value.get('pulsecart_min_share', '0.3') }}"
# Airflow Variable `pulsecart_keep_days` (default 400): the score history `pulsecart prune` keeps.
KEEP_DAYS = "{{ var.value.get('pulsecart_keep_days', '400') | int }}"

# Airflow Variable `pulsecart_gcp_project`, when set, else the worker's PULSECART_GCP_PROJECT / GOOGLE_CLOUD_PROJECT.
PROJECT_FLAG = ("{% if var.value.get('pulsecart_gcp_project', '') %} --project "
                "{{ var.value.get('pulsecart_gcp_project') }}{% endif %}")

# The database URL from the Airflow connection `pulsecart_db`, added to the worker's environment.
DATABASE_ENV = {"PULSECART_DATABASE_URL": "{{ conn.pulsecart_db.get_uri() }}"}

# BashSensor replaces the whole environment: give it PATH (read here, not a secret) and the Airflow
# marker so the CLI never falls back to an embedded database.
SENSOR_ENV = DATABASE_ENV | {
    "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
    "AIRFLOW_CTX_DAG_ID": "{{ dag.dag_id }}",
}

# check-complete exits 4 while the day's data is still arriving: poke again. Anything else fails.
EXIT_INCOMPLETE = 4
# status --check exits 7 when its only problems are suspect days: they ran (a warning, not lateness).
EXIT_SUSPECT = 7


def cli_task(task_id: str, arguments: str, execution_timeout: timedelta, *,
             not_in_backfills: bool = False) -> PulsecartCommand:
    """A task that runs `pulsecart <arguments>` with the database URL added to the worker's environment.
    Every exit code but 0 fails the task (Airflow's default would turn 99 into "skipped").

    Past ``execution_timeout`` Airflow sends SIGTERM: pulsecart cancels its statement, rolls back,
    records the run as failed ("terminated by SIGTERM") and frees the day, so the retry starts cleanly
    instead of a hung job blocking the next night. ``not_in_backfills``: a backfill's run does nothing."""
    command = f"{CLI} {arguments}"
    if not_in_backfills:
        command = ("{% if dag_run.run_type == 'backfill' %}echo 'pulsecart: not in a backfill run'"
                   "{% else %}" + command + "{% endif %}")
    return PulsecartCommand(task_id=task_id, bash_command=command, env=DATABASE_ENV,
                            append_env=True, skip_on_exit_code=None, execution_timeout=execution_timeout,
                            on_failure_callback=failure_email(arguments))


def heal_task(job: str, execution_timeout: timedelta) -> PulsecartCommand:
    """Once the prior day succeeded, rerun the days among the last `pulsecart_heal_days` (30) that are stale
    (their events changed since their run: late, deleted or corrected events, reconciled dead letters) or
    whose latest run failed, and (aggregate) the never-run days that such days read. Missing days are left
    to the operator. A failure fails only this task (one email, naming the days that could not be healed);
    a prior day that failed is healed the next night, not alerted twice. Backfill runs do not heal."""
    return cli_task(f"heal_{job}", f"{job} --window {HEAL_FROM}..{DAY} --stale --only-failed --keep-going",
                    execution_timeout, not_in_backfills=True)


def wait_for_complete_day(then: str) -> PulsecartSensor:
    """A sensor that holds the run until the prior day's events are complete (the consumer has moved
    30 minutes past its midnight, and the day holds at least `pulsecart_min_share` of its usual events):
    `pulsecart check-complete --date <prior day> --grace 30m --min-share 0.3`, poked
    every 5 minutes in reschedule mode for up to 6 hours. Exit 4 pokes again; any other failure
    (a broken database, say) fails the task at once instead of looking like missing data.
    ``then``: the arguments of the job it guards, for the failure email's rerun command."""
    check = f"check-complete --date {PRIOR_DAY} --grace 30m --min-share {MIN_SHARE}"
    return PulsecartSensor(task_id="wait_for_prior_day_events", bash_command=f"{CLI} {check}", env=SENSOR_ENV,
                           retry_exit_code=EXIT_INCOMPLETE, mode="reschedule", poke_interval=300,
                           timeout=6 * 60 * 60, execution_timeout=timedelta(minutes=10),  # one poke
                           on_failure_callback=failure_email(f"{check} && pulsecart {then}"))


def failure_email(arguments: str) -> FailureEmail:
    """The failure alert of a task running `pulsecart <arguments>`: its rerun command names the day."""
    return FailureEmail(rerun=f"pulsecart {arguments}".replace(PRIOR_DAY, DAY),
                        day=DAY if PRIOR_DAY in arguments else "")


def finished_by(job: str, hours_after_firing: int, by: str) -> PulsecartCommand:
    """A scheduled run's lateness alert: `wait_for_deadline` waits until ``hours_after_firing`` after the
    run's logical date (its cron fire time), then `finished_by_deadline` checks that the prior day is done
    (`pulsecart status --check`) and, when it is not, sends one lateness email from its own process (no
    retry: at the deadline a day that cannot even be checked is worth the email, which quotes the error).
    Other runs pass both at once. Returns the check task; the wait is upstream of it, beside the job. A
    scheduled run stays running until its deadline."""
    deadline = ("{% if dag_run.run_type == 'scheduled' %}{{ (dag_run.logical_date + macros.timedelta(hours="
                f"{hours_after_firing}" ")).isoformat() }}{% else %}{{ dag_run.run_after.isoformat() }}{% endif %}")
    wait = DateTimeSensor(task_id="wait_for_deadline", target_time=deadline, mode="reschedule", poke_interval=300,
                          timeout=(hours_after_firing + 20) * 60 * 60, execution_timeout=timedelta(minutes=10),
                          on_failure_callback=failure_email("status"))
    check = f"status --check --job {job} --end {PRIOR_DAY} --days 1"   # a suspect day is done: not late
    late = PulsecartCommand(
        task_id="finished_by_deadline", env=DATABASE_ENV, append_env=True, skip_on_exit_code=None, retries=0,
        bash_command=("{% if dag_run.run_type == 'scheduled' %}" + f"{CLI} {check} || test $? -eq {EXIT_SUSPECT}"
                      + "{% else %}echo 'pulsecart: only a scheduled run can be late'{% endif %}"),
        execution_timeout=timedelta(minutes=10), on_failure_callback=LatenessEmail(job, DAY, by))
    wait >> late
    return late


def default_args(retries: int, retry_delay: timedelta) -> dict:
    """Every task's owner, retries and retry delay. Retries are fixed when the file is parsed: for a drill,
    PULSECART_DAG_RETRIES and PULSECART_DAG_RETRY_DELAY_S (seconds) in the dag-processor's environment
    replace the values given here."""
    return {"owner": "pulsecart", "retries": int(_parse_time_setting("PULSECART_DAG_RETRIES", retries)),
            "retry_delay": timedelta(seconds=_parse_time_setting("PULSECART_DAG_RETRY_DELAY_S",
                                                                 retry_delay.total_seconds()))}


def _parse_time_setting(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 <= value < float("inf"):   # also refuses nan
        raise ValueError(f"{name}={text!r}: a number of at least 0 was expected")
    return value


def rerun_help(command: str) -> str:
    return f"""
### Rerun by hand

Every task runs the same `pulsecart` command an operator would type, and every run, Airflow's or
yours, lands in the `job_runs` ledger:

```sh
{command}
pulsecart status                        # which days succeeded, failed, are missing or stale
pulsecart runs --limit 10               # the ledger, newest first
```

A second run of the same job and day while one is going exits 3 (the task retries); pass `--wait`
by hand to queue behind it. Exit code 99 is never used, so nothing here is ever "skipped".
"""
