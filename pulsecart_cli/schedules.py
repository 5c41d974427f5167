"""The Airflow DAGs that run the jobs, and how to have Airflow process exactly the days A … B.

``dags/`` is checked against ``DAGS`` (tests/airflow/test_schedules.py, tests/unit/test_dag_constants.py): a renamed DAG or a moved
schedule fails the suite, never the printed backfill command.
"""

import json
import shutil
import subprocess
import time as clock
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pulsecart_cli import signals
from pulsecart_cli.dates import days_between
from pulsecart_cli.errors import ConfigError, JobFailed
from pulsecart_cli.registry import DAILY_JOBS


@dataclass(frozen=True)
class Dag:
    job: str
    dag_id: str
    schedule: str  # cron, UTC

    @property
    def fires_at(self) -> time:
        """The time of day a daily DAG fires (``M H * * *``)."""
        minute, hour, *rest = self.schedule.split()
        if rest != ["*", "*", "*"] or not (minute.isdigit() and hour.isdigit()):
            raise ValueError(f"{self.dag_id} does not run once a day at a fixed time: {self.schedule}")
        return time(int(hour), int(minute))


# The daily jobs' DAGs come from their registry entries.
DAGS = {job.name: Dag(job.name, job.dag_id, job.schedule) for job in DAILY_JOBS.values()} | {
    "reconcile": Dag("reconcile", "pulsecart_dead_letter_reconciliation", "0 */6 * * *"),
}
DAILY = tuple(DAILY_JOBS)
# Every day asked for runs, whatever Airflow ran before: "failed" would skip the days whose latest Airflow
# run succeeded, so a day forgotten, or stale after late events, would silently not run.
REPROCESS_BEHAVIOR = "completed"


@dataclass(frozen=True)
class Backfill:
    """An ``airflow backfill create`` that makes Airflow process exactly the days first … last."""

    dag: Dag
    first: date
    last: date
    max_active_runs: int
    dry_run: bool = False

    @property
    def runs(self) -> tuple[datetime, datetime]:
        """The first and last run: the run that fires on D+1 processes D (its ds is D+1; the DAG takes ds-1)."""
        fires = self.dag.fires_at
        return (datetime.combine(self.first + timedelta(days=1), fires, tzinfo=UTC),
                datetime.combine(self.last + timedelta(days=1), fires, tzinfo=UTC))

    @property
    def from_to(self) -> tuple[date, date]:
        """--from-date/--to-date select run times, both ends included, a date meaning its midnight: the runs
        on first+1 … last+1 are those from first+1 00:00 to last+2 00:00 (before that day's run)."""
        if self.dag.fires_at == time(0, 0):
            raise ValueError(f"{self.dag.dag_id} fires at midnight: a date range cannot tell its runs apart")
        return self.first + timedelta(days=1), self.last + timedelta(days=2)

    def command(self, airflow: str = "airflow") -> list[str]:
        from_date, to_date = self.from_to
        return [airflow, "backfill", "create", "--dag-id", self.dag.dag_id,
                "--from-date", from_date.isoformat(), "--to-date", to_date.isoformat(),
                "--reprocess-behavior", REPROCESS_BEHAVIOR, "--max-active-runs", str(self.max_active_runs),
                *(["--dry-run"] if self.dry_run else [])]


    @property
    def days(self) -> list[date]:
        return days_between(self.first, self.last)

    def day_of(self, logical_date: datetime) -> date:
        """The day a run processes: the one before the day it fires (its logical date)."""
        return logical_date.date() - timedelta(days=1)


def backfill(job: str, days: list[date], max_active_runs: int, dry_run: bool = False) -> Backfill:
    return Backfill(DAGS[job], min(days), max(days), max_active_runs, dry_run)


def find_airflow() -> str:
    airflow = shutil.which("airflow")
    if airflow is None:
        raise ConfigError("no airflow command on PATH",
                          hint="run it where Airflow is installed, or drop --run and run the printed command there")
    return airflow


def run(plan: Backfill, airflow: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the backfill command; its output is returned, not printed (``failure`` says what went wrong
    when it exited non-zero)."""
    return _airflow(plan.command(airflow), timeout_s)


def _airflow(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """An `airflow` command, ended (and its output dropped) when a signal comes."""
    signals.check()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # noqa: S603 - an argv list, no shell
                          text=True) as child:
        deadline = clock.monotonic() + timeout_s
        while True:
            try:
                stdout, stderr = child.communicate(timeout=0.2)
                signals.check()  # a Ctrl-C to the process group ended the child too: not its failure
                return subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
            except subprocess.TimeoutExpired:
                if signals.requested() is None and clock.monotonic() < deadline:
                    continue
                child.terminate()
                try:
                    child.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()
                signals.check()
                raise


def failure(result: subprocess.CompletedProcess[str]) -> JobFailed | None:
    if result.returncode == 0:
        return None
    return JobFailed(f"airflow backfill create exited {result.returncode}: {_last_line(result)}")


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed airflow command said last (its error, usually)."""
    return (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]


FINISHED = ("success", "failed")
POLL_S = 5.0
CLOCK_SKEW = timedelta(seconds=5)   # between this machine and the Airflow component that ends a run


@dataclass(frozen=True)
class AirflowDayRun:
    """How Airflow's run of one day of a backfill ended: success, failed, or "no run" (Airflow made none)."""

    day: date
    state: str
    run_id: str = ""


def list_runs(plan: Backfill, airflow: str, timeout_s: float = 120) -> list[dict[str, Any]]:
    """Airflow's runs of the plan's DAG whose logical dates fall within the plan's runs."""
    first_run, last_run = plan.runs
    result = _airflow([airflow, "dags", "list-runs", plan.dag.dag_id, "--output", "json",
                       "--start-date", first_run.isoformat(), "--end-date", last_run.isoformat()], timeout_s)
    if result.returncode != 0:
        raise JobFailed(f"airflow dags list-runs exited {result.returncode}: {_last_line(result)}")
    return parse_runs(result.stdout)


def parse_runs(stdout: str) -> list[dict[str, Any]]:
    """The JSON list `airflow dags list-runs --output json` prints (after any warnings it prints first; for no
    runs it prints "No data found")."""
    decoder = json.JSONDecoder()
    for line_start in (i for i in range(len(stdout)) if stdout[i] == "[" and (i == 0 or stdout[i - 1] == "\n")):
        try:
            runs, _ = decoder.raw_decode(stdout, line_start)
        except json.JSONDecodeError:
            continue
        if isinstance(runs, list) and all(isinstance(run, dict) for run in runs):
            return runs
    if "No data found" in stdout:
        return []
    raise JobFailed("airflow dags list-runs printed no JSON list of runs")


def finished_runs(plan: Backfill, runs: list[dict[str, Any]], since: datetime) -> dict[date, AirflowDayRun]:
    """The plan's days whose run ended after ``since`` (when the backfill was created), by day."""
    ended = {}
    for run in runs:
        if run.get("state") not in FINISHED or not run.get("end_date") or not run.get("logical_date"):
            continue
        if datetime.fromisoformat(run["end_date"]) < since - CLOCK_SKEW:
            continue
        day = plan.day_of(datetime.fromisoformat(run["logical_date"]))
        if plan.first <= day <= plan.last:
            ended[day] = AirflowDayRun(day, run["state"], run["run_id"])
    return ended


def days_without_runs(plan: Backfill, runs: list[dict[str, Any]]) -> list[date]:
    have = {plan.day_of(datetime.fromisoformat(r["logical_date"])) for r in runs if r.get("logical_date")}
    return [day for day in plan.days if day not in have]


def wait(plan: Backfill, airflow: str, since: datetime, on_end: Callable[[AirflowDayRun], None],
         poll_s: float = POLL_S) -> list[AirflowDayRun]:
    """Wait until Airflow's run of every day of the plan has ended (after ``since``); ``on_end`` hears of each
    day as it ends. A day Airflow made no run for (a day before the DAG's start_date, say) ends as "no run"."""
    ended: dict[date, AirflowDayRun] = {}
    runs = list_runs(plan, airflow)
    for day in days_without_runs(plan, runs):
        ended[day] = AirflowDayRun(day, "no run")
        on_end(ended[day])
    while True:
        for day, run in sorted(finished_runs(plan, runs, since).items()):
            if day not in ended:
                ended[day] = run
                on_end(run)
        if len(ended) == len(plan.days):
            return [ended[day] for day in plan.days]
        clock.sleep(poll_s)
        runs = list_runs(plan, airflow)
