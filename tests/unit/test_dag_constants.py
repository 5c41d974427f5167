"""The DAGs repeat two of the library's constants (they import Airflow, not pulsecart): the topics one
reconcile task each, and the exit code a sensor pokes again on. Read from the DAG files' source, so
this runs without Airflow."""

import ast

import pytest

from pulsecart_cli.errors import EXIT_INCOMPLETE
from pulsecart_cli.pubsub import TOPICS
from tests.helpers import DAGS


def dag_constants(name: str) -> dict[str, object]:
    """Every module-level ``name = <literal>`` in dags/*.py, by file."""
    found = {}
    for path in sorted(DAGS.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found[path.name] = ast.literal_eval(node.value)
    return found


@pytest.mark.parametrize(("name", "library_value"), [("TOPICS", TOPICS), ("EXIT_INCOMPLETE", EXIT_INCOMPLETE)])
def test_the_dags_agree_with_the_library(name, library_value):
    found = dag_constants(name)
    assert found, f"no DAG file defines {name} any more: drop it from this test"
    assert found == dict.fromkeys(found, library_value)
