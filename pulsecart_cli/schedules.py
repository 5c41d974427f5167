"""The Airflow DAGs that run the jobs, and how to have Airflow process exactly the days A … B.

``dags/`` is checked against ``DAGS`` (tests/dags/test_schedules.py, tests/unit/test_dag_constants.py): a renamed DAG or a moved
schedule fails the suite, never the printed backfill command.
"""

import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

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


def backfill(job: str, days: list[date], max_active_runs: int, dry_run: bool = False) -> Backfill:
    return Backfill(DAGS[job], min(days), max(days), max_active_runs, dry_run)


def find_airflow() -> str:
    airflow = shutil.which("airflow")
    if airflow is None:
        raise ConfigError("no airflow command on PATH",
                          hint="run it where Airflow is installed, or drop --run and run the printed command there")
    return airflow


def run(plan: Backfill, airflow: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """Run the backfill command; its output is returned, not printed (``failure`` says what went wrong
    when it exited non-zero)."""
    return subprocess.run(  # noqa: S603 - an argv list built from a validated plan, no shell
        plan.command(airflow), capture_output=True, text=True, check=False, timeout=timeout_s)


def failure(result: subprocess.CompletedProcess) -> JobFailed | None:
    if result.returncode == 0:
        return None
    last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
    return JobFailed(f"airflow backfill create exited {result.returncode}: {last}")
