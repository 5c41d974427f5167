"""What a run records in the ledger (job_runs): who started it, its status, what it wrote.

``units.run_unit`` writes these rows; ``status`` and ``planning`` read them.
"""

import os
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from pulsecart_cli.errors import Interrupted

TRIGGERS = ("manual", "airflow", "cron")


class RunStatus(StrEnum):
    """The status of one attempt of one job on one unit. A StrEnum: the ledger stores its value."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FORGOTTEN = "forgotten"  # `pulsecart forget` removed the day's results
    # Never in the ledger: results a run reports for units it did not get to record.
    BUSY = "busy"  # another run held the unit's lock; skipped (reconcile)
    NOT_RUN = "not run"  # its work raised ``units.NotRun``: rolled back, its ledger row removed


# The statuses a ledger row can have (a row whose session died reads as failed: see job_run_status).
LEDGER_STATUSES = (RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.FORGOTTEN)


@dataclass(frozen=True)
class Invocation:
    """Who started this run."""

    trigger: str
    airflow_run_id: str | None

    @classmethod
    def detect(cls, trigger: str | None) -> "Invocation":
        airflow_run_id = os.environ.get("AIRFLOW_CTX_DAG_RUN_ID") or None
        return cls(trigger or ("airflow" if airflow_run_id else "manual"), airflow_run_id)


@dataclass
class WorkOutput:
    """What a unit of work wrote."""

    rows: int
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set when the work finished but did not fully succeed
    status: RunStatus | None = None  # the ledger status when not succeeded/failed: forgotten


@dataclass
class UnitResult:
    """One attempt of one job on one unit (a day or a target)."""

    job: str
    run_date: date | None
    target: str | None
    status: RunStatus
    rows: int = 0
    duration_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    run_id: int | None = None
    interruption: Interrupted | None = None  # a signal came while this unit ran (rolled back, or its COMMIT landed)

    @property
    def interrupted(self) -> bool:
        return self.interruption is not None

    @property
    def completed(self) -> bool:
        """Did what it was asked: ran (succeeded) or, for `pulsecart forget`, removed the day's results."""
        return self.status in (RunStatus.SUCCEEDED, RunStatus.FORGOTTEN)

    @property
    def not_run(self) -> bool:
        """Dropped by its work (``units.NotRun``): rolled back, no ledger row."""
        return self.status == RunStatus.NOT_RUN
