"""`--via airflow --run` waits for Airflow's runs: which of `airflow dags list-runs --output json`'s runs
belong to the backfill and have ended, by the day each processes."""

import json
from datetime import UTC, date, datetime

import pytest

from pulsecart_cli import schedules
from pulsecart_cli.errors import JobFailed

PLAN = schedules.backfill("aggregate", [date(2025, 3, 3), date(2025, 3, 5)], 4)   # days 3 … 5
CREATED = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def run(day: int, state: str, ended: str = "2026-12-05T12:01:00+00:00") -> dict:
    """A run as `airflow dags list-runs --output json` prints it (Airflow 3): the run on day+1 processes day."""
    logical = f"2025-03-{day + 1:02d}T02:00:00+00:00"
    return {"dag_id": "pulsecart_nightly_aggregation", "run_id": f"backfill__{logical}", "state": state,
            "run_after": logical, "logical_date": logical, "start_date": "2026-12-05T12:00:30+00:00",
            "end_date": ended if state in ("success", "failed") else ""}


def test_the_plan_covers_each_day_and_a_run_processes_the_day_before_it_fires():
    assert PLAN.days == [date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5)]
    assert PLAN.day_of(datetime(2025, 3, 4, 2, 0, tzinfo=UTC)) == date(2025, 3, 3)


def test_only_runs_that_ended_after_the_backfill_was_created_count():
    runs = [run(3, "success"), run(4, "running"), run(5, "failed", ended="2026-12-05T11:00:00+00:00"),
            run(6, "success")]                                      # day 6 is outside the plan
    assert schedules.finished_runs(PLAN, runs, CREATED) == {
        date(2025, 3, 3): schedules.AirflowDayRun(date(2025, 3, 3), "success", runs[0]["run_id"])}
    runs[2] = run(5, "failed")
    assert schedules.finished_runs(PLAN, runs, CREATED)[date(2025, 3, 5)].state == "failed"


def test_a_day_airflow_made_no_run_for_is_named():
    assert schedules.days_without_runs(PLAN, [run(3, "queued"), run(5, "queued")]) == [date(2025, 3, 4)]


def test_warnings_before_the_json_are_skipped_and_no_json_is_an_error():
    printed = "[warning] Could not import graphviz.\n" + json.dumps([run(3, "success")])
    assert schedules.parse_runs(printed) == [run(3, "success")]
    with pytest.raises(JobFailed, match="printed no JSON list of runs"):
        schedules.parse_runs("Traceback (most recent call last):\n")
    assert schedules.parse_runs("[warning] something\nNo data found\n") == []
