"""The DAGs repeat some of the library's constants (they import Airflow, not pulsecart): the topics one
reconcile task each, the exit code a sensor pokes again on, and each DAG's id and schedule (which
`--via airflow` relies on); the daily jobs' DAGs come from dags/pulsecart_jobs.json, generated from the
registry. Read from the DAG files' source and that file, so this runs without Airflow."""

import ast
import json

import pytest

from pulsecart_cli import dag_spec
from pulsecart_cli.errors import EXIT_INCOMPLETE, EXIT_SUSPECT
from pulsecart_cli.pubsub import TOPICS
from pulsecart_cli.schedules import DAGS as SCHEDULED
from tests.helpers import DAGS


def dag_constants(name: str) -> dict[str, object]:
    """Every module-level ``name = <literal>`` in dags/*.py, by file."""
    found = {}
    for path in sorted(DAGS.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found[path.name] = ast.literal_eval(node.value)
    return found


@pytest.mark.parametrize(("name", "library_value"), [("TOPICS", TOPICS), ("EXIT_INCOMPLETE", EXIT_INCOMPLETE),
                                                         ("EXIT_SUSPECT", EXIT_SUSPECT)])
def test_the_dags_agree_with_the_library(name, library_value):
    found = dag_constants(name)
    assert found, f"no DAG file defines {name} any more: drop it from this test"
    assert found == dict.fromkeys(found, library_value)


JOBS_FILE = DAGS / "pulsecart_jobs.json"


def dag_declarations() -> dict[str, dict[str, object]]:
    """The ``dag_id=`` and ``schedule=`` of each ``DAG(...)`` in dags/*.py with literal ones, and of each daily
    job's DAG in dags/pulsecart_jobs.json (which dags/pulsecart_daily_dags.py builds), by dag_id."""
    found = {}
    for path in sorted(DAGS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "DAG":
                kwargs = {k.arg: k.value for k in node.keywords if k.arg in ("dag_id", "schedule")}
                if all(isinstance(value, ast.Constant) for value in kwargs.values()):
                    found[kwargs["dag_id"].value] = {k: value.value for k, value in kwargs.items()}
    for job in json.loads(JOBS_FILE.read_text())["daily_jobs"]:
        found[job["dag_id"]] = {"dag_id": job["dag_id"], "schedule": job["schedule"]}
    return found


def test_every_dag_the_library_knows_is_in_dags_with_its_schedule():
    """The registry's DAG ids and schedules (what `--via airflow` targets) against the DAG files' source;
    tests/airflow/test_schedules.py checks the same against the DAGs Airflow loads."""
    declared = dag_declarations()
    assert {dag.dag_id: dag.schedule for dag in SCHEDULED.values()} == {
        dag_id: d["schedule"] for dag_id, d in declared.items()}



def test_the_daily_dags_file_is_what_the_registry_generates():
    """dags/pulsecart_jobs.json is generated: after changing a job's registry entry, run `make dags`."""
    assert JOBS_FILE.read_text() == dag_spec.render(), "dags/pulsecart_jobs.json is out of date: run `make dags`"
    assert dag_spec.main(["--check", str(JOBS_FILE)]) == 0
