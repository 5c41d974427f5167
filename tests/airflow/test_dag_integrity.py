"""Every DAG file imports in real Airflow 3, offline and without secrets, and says what it should."""

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest

from pulsecart_cli.schedules import DAGS as SCHEDULED
from pulsecart_cli.schedules import DAILY
from tests.helpers import DAGS

# Every DAG the library knows (a daily job's from its registry entry), with its schedule and retries:
# a daily job's DAG retries twice, five minutes apart.
EXPECTED = {dag.dag_id: (dag.schedule, 2, timedelta(minutes=5)) for job, dag in SCHEDULED.items() if job in DAILY} | {
    SCHEDULED["reconcile"].dag_id: (SCHEDULED["reconcile"].schedule, 1, timedelta(minutes=2))}
TAGS = {"pulsecart_nightly_aggregation": {"pulsecart", "personalization"},
        "pulsecart_dead_letter_reconciliation": {"pulsecart", "reliability"},
        "pulsecart_daily_metrics": {"pulsecart", "metrics"}}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    if str(DAGS) not in sys.path:  # Airflow puts its configured dags folder on sys.path; this is that folder
        sys.path.insert(0, str(DAGS))
    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors_and_exactly_the_dags_the_library_knows(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == set(EXPECTED)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_schedule_tags_retries_and_docs(dagbag, dag_id):
    schedule, retries, retry_delay = EXPECTED[dag_id]
    dag = dagbag.dags[dag_id]
    assert dag.schedule == schedule
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert str(dag.timetable.timezone) == "UTC"
    assert set(dag.tags) == TAGS.get(dag_id, set(dag.tags) | {"pulsecart"})
    assert dag.catchup is False
    assert str(dag.start_date.tzinfo) == "UTC"
    assert "Rerun by hand" in dag.doc_md
    for task in dag.tasks:
        assert task.retries == (0 if task.task_id == "finished_by_deadline" else retries)
        assert task.retry_delay == retry_delay
        assert task.owner == "pulsecart"


TIMEOUTS = {"wait_for_prior_day_events": timedelta(minutes=10), "aggregate_prior_day": timedelta(hours=2),
            "compute_daily_metrics": timedelta(minutes=30), "reconcile_commerce_events": timedelta(hours=1),
            "reconcile_user_actions": timedelta(hours=1), "reconcile_system_events": timedelta(hours=1)}


def test_every_task_has_an_execution_timeout(dagbag):
    """A hung job is killed (SIGTERM, which pulsecart handles) and retried instead of blocking the next run."""
    seen = set()
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.execution_timeout == TIMEOUTS.get(task.task_id, task.execution_timeout), (dag.dag_id, task.task_id)
            assert timedelta(0) < task.execution_timeout <= timedelta(hours=2), (dag.dag_id, task.task_id)
            seen.add(task.task_id)
    assert set(TIMEOUTS) <= seen


@pytest.mark.parametrize("job", DAILY)
def test_daily_jobs_wait_for_complete_data_first_then_heal(dagbag, job):
    dag = dagbag.dags[SCHEDULED[job].dag_id]
    [job_task] = dag.get_task("wait_for_prior_day_events").downstream_task_ids
    heal = dag.get_task(f"heal_{job}")
    assert heal.upstream_task_ids == {job_task} and heal.trigger_rule == "all_success"
    assert "--stale --only-failed --keep-going" in heal.bash_command and "'backfill'" in heal.bash_command
    assert set(dag.task_ids) - {"wait_for_prior_day_events", job_task, heal.task_id} == (
        {"wait_for_deadline", "finished_by_deadline"} | ({"prune_score_history"} if job == "aggregate" else set()))
    sensor = dag.get_task("wait_for_prior_day_events")
    from airflow.providers.standard.sensors.bash import BashSensor

    assert isinstance(sensor, BashSensor)
    from pulsecart_common import MIN_SHARE, PRIOR_DAY

    assert sensor.bash_command.endswith(f" check-complete --date {PRIOR_DAY} --grace 30m --min-share {MIN_SHARE}")
    assert sensor.retry_exit_code == 4
    assert sensor.mode == "reschedule"
    assert sensor.timeout == 6 * 60 * 60
    assert {"PATH", "PULSECART_DATABASE_URL", "AIRFLOW_CTX_DAG_ID"} <= set(sensor.env)


def test_reconcile_tasks_run_in_parallel_one_per_topic(dagbag):
    dag = dagbag.dags["pulsecart_dead_letter_reconciliation"]
    assert sorted(t.task_id for t in dag.tasks) == [
        "reconcile_commerce_events", "reconcile_system_events", "reconcile_user_actions"]
    assert all(not t.upstream_task_ids for t in dag.tasks)


def test_operators_append_env_and_never_skip_on_99(dagbag):
    from airflow.providers.standard.operators.bash import BashOperator

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if isinstance(task, BashOperator):
                assert task.append_env is True
                assert set(task.env) == {"PULSECART_DATABASE_URL"}
                assert "{{ conn.pulsecart_db.get_uri() }}" in task.env["PULSECART_DATABASE_URL"]
                assert not task.skip_on_exit_code


def test_dag_files_parse_offline_and_without_secrets(tmp_path):
    """Parse in a fresh interpreter that refuses any network connection and has no connection or
    variable configured: a DAG file that reaches out at parse time fails here."""
    script = textwrap.dedent(f"""
        import socket, sys
        def refuse(event, args):
            if event in ("socket.connect", "socket.getaddrinfo"):
                raise RuntimeError(f"network at parse time: {{event}} {{args}}")
        sys.addaudithook(refuse)
        sys.path.insert(0, {str(DAGS)!r})  # as Airflow does for its dags folder
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS)!r})
        print(sorted(bag.dag_ids), bag.import_errors)
    """)
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == f"{sorted(EXPECTED)} {{}}"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_every_task_alerts_once_on_final_failure_to_recipients_read_at_run_time(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    for task in dag.tasks:
        kind = "LatenessEmail" if task.task_id == "finished_by_deadline" else "FailureEmail"
        assert [type(c).__name__ for c in task.on_failure_callback] == [kind], task.task_id
        assert not task.on_retry_callback
        assert not task.email   # no Airflow 2 email_on_failure path
        notifier = task.on_failure_callback[0]
        assert notifier.to == "{{ var.value.get('pulsecart_alert_emails', '') }}"
        assert notifier.smtp_conn_id == "smtp_default"
        assert notifier.rerun.startswith("pulsecart ")
    assert "`pulsecart_alert_emails`" in dag.doc_md and "unset or empty: no email" in dag.doc_md


@pytest.mark.parametrize(("dag_id", "by"), [("pulsecart_nightly_aggregation", "06:00 UTC"),
                                            ("pulsecart_daily_metrics", "07:00 UTC"),
                                            ("pulsecart_dead_letter_reconciliation", None)])
def test_daily_runs_are_checked_four_hours_after_they_fire(dagbag, dag_id, by):
    """Lateness is watched by tasks (which read the Variable and smtp_default wherever Airflow stores them),
    not by Deadline Alert callbacks (which may not read them from the metadata database)."""
    dag = dagbag.dags[dag_id]
    assert not dag.deadline
    if by is None:
        assert "finished_by_deadline" not in dag.task_ids
        return
    wait, check = dag.get_task("wait_for_deadline"), dag.get_task("finished_by_deadline")
    assert not wait.upstream_task_ids and check.upstream_task_ids == {"wait_for_deadline"}
    assert wait.mode == "reschedule" and "macros.timedelta(hours=4)" in wait.target_time
    assert check.retries == 0 and " status --check --job " in check.bash_command
    assert "dag_run.run_type == 'scheduled'" in check.bash_command and "dag_run.run_type == 'scheduled'" in wait.target_time
    assert check.on_failure_callback[0].by == by
    assert f"not done by {by}" in dag.doc_md


def retries_as_parsed(**env: str) -> subprocess.CompletedProcess:
    """Each task's retries and retry delay (seconds) when the DAG files are parsed with ``env`` added."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(DAGS)!r})
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS)!r})
        print(json.dumps({{"errors": [str(e) for e in bag.import_errors.values()],
                          "tasks": {{f"{{d.dag_id}}.{{t.task_id}}": [t.retries, t.retry_delay.total_seconds()]
                                    for d in bag.dags.values() for t in d.tasks}}}}))
    """)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULSECART_DAG_")}
    return subprocess.run([sys.executable, "-c", script], env=base | env, capture_output=True, text=True,
                          check=False, timeout=300)


def test_a_drill_shortens_every_tasks_retries_through_the_dag_processors_environment():
    parsed = json.loads(retries_as_parsed(PULSECART_DAG_RETRIES="0", PULSECART_DAG_RETRY_DELAY_S="5").stdout
                        .strip().splitlines()[-1])
    assert parsed["errors"] == []
    assert len(parsed["tasks"]) >= 10
    assert {task: value for task, value in parsed["tasks"].items() if value != [0, 5.0]} == {}
    refused = json.loads(retries_as_parsed(PULSECART_DAG_RETRIES="two").stdout.strip().splitlines()[-1])
    assert refused["tasks"] == {}
    assert all("PULSECART_DAG_RETRIES='two': a number of at least 0 was expected" in e for e in refused["errors"])
    assert len(refused["errors"]) == 2   # one per DAG file: pulsecart_daily_dags.py, dead_letter_reconciliation.py
