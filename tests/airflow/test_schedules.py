"""`pulsecart aggregate|metrics --via airflow` prints the `airflow backfill create` whose runs process
exactly the days asked for, from DAG ids and schedules that must match dags/ (pulsecart_cli.schedules)."""

import os
import re
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from pulsecart_cli.schedules import DAGS, DAILY
from tests.airflow.conftest import AIRFLOW
from tests.airflow.conftest import DAGS as DAGS_FOLDER
from tests.helpers import run_pulsecart


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    if str(DAGS_FOLDER) not in sys.path:
        sys.path.insert(0, str(DAGS_FOLDER))
    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_the_cli_knows_every_dag_by_its_id_and_schedule(dagbag):
    assert dagbag.import_errors == {}
    assert {dag.dag_id: dag.schedule for dag in DAGS.values()} == {
        dag_id: dagbag.dags[dag_id].schedule for dag_id in dagbag.dag_ids}


@pytest.mark.parametrize("job", DAILY)
def test_each_daily_dag_runs_its_job_for_the_prior_day(dagbag, job):
    dag = dagbag.dags[DAGS[job].dag_id]
    commands = [task.bash_command for task in dag.tasks if hasattr(task, "bash_command")]
    assert any(re.search(rf"\s{job} --date .*ds_add\(ds, -1\)", command) for command in commands), commands


@pytest.mark.parametrize(("job", "first", "last", "from_date", "to_date"), [
    ("aggregate", "2025-03-03", "2025-03-08", "2025-03-04", "2025-03-10"),
    ("metrics", "2025-03-03", "2025-03-08", "2025-03-04", "2025-03-10"),
    ("aggregate", "2024-12-31", "2024-12-31", "2025-01-01", "2025-01-02"),
    ("metrics", "2024-02-28", "2024-03-01", "2024-02-29", "2024-03-03"),
])
def test_the_printed_command(job, first, last, from_date, to_date):
    window = ["--date", first] if first == last else ["--window", f"{first}..{last}"]
    result = run_pulsecart(job, *window, "--via", "airflow", "--max-active-runs", "3",
                           env={"PULSECART_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/unused"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"airflow backfill create --dag-id {DAGS[job].dag_id} --from-date {from_date} "
                             f"--to-date {to_date} --reprocess-behavior completed --max-active-runs 3\n")
    hour = DAGS[job].fires_at.hour
    assert result.stderr == (
        f"{DAGS[job].dag_id}: the runs {date.fromisoformat(first) + timedelta(days=1)} {hour:02d}:00:00+0000 … "
        f"{date.fromisoformat(last) + timedelta(days=1)} {hour:02d}:00:00+0000 process {first} … {last}; afterwards: "
        f"pulsecart status --job {job} --end {last} --days {(date.fromisoformat(last) - date.fromisoformat(first)).days + 1}\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--via", "airflow", "--only-missing"], "--only-missing: only with --via local"),
    (["--via", "airflow", "--keep-going", "--wait"], "--keep-going, --wait: only with --via local"),
    (["--run"], "--run, --no-wait and --max-active-runs go with --via airflow"),
    (["--max-active-runs", "2"], "--run, --no-wait and --max-active-runs go with --via airflow"),
    (["--no-wait"], "--run, --no-wait and --max-active-runs go with --via airflow"),
    (["--via", "airflow", "--no-wait"], "--no-wait goes with --via airflow --run"),
    (["--via", "airflow", "--max-active-runs", "0"], "Invalid value for '--max-active-runs'"),
])
def test_options_that_do_not_go_with_the_route_are_refused(args, message):
    result = run_pulsecart("aggregate", "--window", "2025-03-01..2025-03-02", *args,
                           env={"PULSECART_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/unused"})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_run_needs_an_airflow_on_the_path():
    result = run_pulsecart("aggregate", "--date", "2025-03-01", "--via", "airflow", "--run",
                           env={"PATH": "/nonexistent"})
    assert result.returncode == 2
    assert result.stderr.startswith("Error: no airflow command on PATH")


@pytest.mark.parametrize("job", DAILY)
def test_airflow_backfill_dry_run_lists_exactly_the_runs_for_the_days(airflow_home, job):
    """Run through real Airflow (`--run --dry-run` adds airflow's own --dry-run): the runs it would make
    are the ones whose prior day is A … B, no more, no less."""
    first, last = date(2025, 3, 3), date(2025, 3, 8)
    env = airflow_home | {"PATH": f"{Path(AIRFLOW).parent}{os.pathsep}{os.environ['PATH']}"}
    result = run_pulsecart(job, "--window", f"{first}..{last}", "--via", "airflow", "--run", "--dry-run",
                           env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (f"running: airflow backfill create --dag-id {DAGS[job].dag_id} --from-date 2025-03-04 "
            "--to-date 2025-03-10 --reprocess-behavior completed --max-active-runs 4 --dry-run") in result.stderr
    assert "waiting" not in result.stderr          # a dry run creates no runs: nothing to wait for
    logical = [datetime.fromisoformat(text) for text in
               re.findall(r"\|\s*(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00)\s*\|", result.stdout)]
    assert logical, result.stdout
    assert all(run.time() == DAGS[job].fires_at for run in logical)
    processed = [run.date() - timedelta(days=1) for run in logical]  # PRIOR_DAY: ds - 1
    assert processed == [first + timedelta(days=n) for n in range((last - first).days + 1)]
