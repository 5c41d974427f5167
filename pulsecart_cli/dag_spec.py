"""The daily jobs' DAGs as data: ``dags/pulsecart_jobs.json``, generated from the registry.

The DAG files import Airflow, never pulsecart (an Airflow component may have only the CLI), so
dags/pulsecart_daily_dags.py reads this file at parse time and builds one DAG per entry. Regenerate it
after changing a job's registry entry (tests/unit/test_dag_constants.py fails until you do)::

    make dags        # python -m pulsecart_cli.dag_spec dags/pulsecart_jobs.json
"""

import inspect
import json
import sys
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pulsecart_cli.registry import DAILY_JOBS, DailyJob
from pulsecart_cli.schedules import Dag

DEFAULT_PATH = Path("dags") / "pulsecart_jobs.json"
NOTE = ("Generated from pulsecart_cli/registry.py by `make dags` (python -m pulsecart_cli.dag_spec): do not edit. "
        "dags/pulsecart_daily_dags.py builds one DAG per daily job from it.")


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def late_after(job: DailyJob) -> str:
    """The time of day (UTC) a scheduled run's day must be done by: ``late_after_hours`` after it fires."""
    fires = Dag(job.name, job.dag_id, job.schedule).fires_at
    deadline = datetime.combine(date(2000, 1, 1), fires) + timedelta(hours=job.dag.late_after_hours)
    return f"{deadline:%H:%M} UTC"


def job_spec(job: DailyJob) -> dict[str, Any]:
    """One daily job's DAG, as dags/pulsecart_daily_dags.py reads it."""
    dag = job.dag
    return {
        "job": job.name,
        "dag_id": job.dag_id,
        "schedule": job.schedule,
        "description": dag.description,
        "tags": list(dag.tags),
        "doc_md": f"\n# {job.dag_id}\n\n{inspect.cleandoc(dag.doc)}\n",
        "rerun_examples": list(dag.rerun_examples),
        "task_id": dag.task_id,
        "execution_timeout_s": _seconds(dag.execution_timeout),
        "heal_timeout_s": _seconds(dag.heal_timeout),
        "after_healing": [{"task_id": task.task_id, "arguments": task.arguments,
                           "execution_timeout_s": _seconds(task.execution_timeout),
                           "not_in_backfills": task.not_in_backfills} for task in dag.after_healing],
        "late_after_hours": dag.late_after_hours,
        "late_after": late_after(job),
    }


def spec(jobs: Iterable[DailyJob] | None = None) -> dict[str, Any]:
    """Every daily job's DAG (default: the registry's ``DAILY_JOBS`` as it is now)."""
    return {"note": NOTE, "daily_jobs": [job_spec(job) for job in (DAILY_JOBS.values() if jobs is None else jobs)]}


def render(jobs: Iterable[DailyJob] | None = None) -> str:
    return json.dumps(spec(jobs), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """``[--check] [PATH]``: write the file (default dags/pulsecart_jobs.json), or with --check exit 1 when
    it differs from what the registry generates."""
    check = "--check" in argv
    paths = [arg for arg in argv if arg != "--check"]
    path = Path(paths[0]) if paths else DEFAULT_PATH
    text = render()
    if check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is out of date: run `make dags`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path} ({len(DAILY_JOBS)} daily jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
