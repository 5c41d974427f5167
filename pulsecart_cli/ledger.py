"""The run ledger (job_runs) and the per-unit advisory lock that keeps two runs of one job and day apart."""

import os
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import psycopg
from psycopg.types.json import Jsonb

from pulsecart_cli import __version__
from pulsecart_cli.dates import when
from pulsecart_cli.errors import Interrupted, LockBusy
from pulsecart_cli.queries import one_row, query

TRIGGERS = ("manual", "airflow", "cron")


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
class Outcome:
    """What a unit of work wrote."""

    rows: int
    details: dict = field(default_factory=dict)
    error: str | None = None  # set when the work finished but did not fully succeed
    status: str | None = None  # the ledger status when not succeeded/failed: "forgotten"


@dataclass
class UnitResult:
    """One attempt of one job on one unit (a day or a target)."""

    job: str
    run_date: date | None
    target: str | None
    status: str
    rows: int = 0
    duration_s: float = 0.0
    details: dict = field(default_factory=dict)
    error: str | None = None
    run_id: int | None = None
    interruption: Interrupted | None = None  # Ctrl-C, SIGTERM or SIGHUP rolled this unit back

    @property
    def interrupted(self) -> bool:
        return self.interruption is not None

    @property
    def completed(self) -> bool:
        """Did what it was asked: ran (succeeded) or, for `pulsecart forget`, removed the day's results."""
        return self.status in ("succeeded", "forgotten")

    @property
    def abandoned(self) -> bool:
        """Dropped by its work (``Abandoned``): rolled back, no ledger row."""
        return self.status == "not run"


class Abandoned(Exception):
    """Raised by a unit's work to drop it: rolled back and removed from the ledger, as if never started."""


def _signed32(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


def lock_keys(job: str, run_date: date | None, target: str | None) -> dict:
    unit = run_date.toordinal() if run_date else zlib.crc32((target or "").encode())
    return {"job_key": _signed32(zlib.crc32(f"pulsecart:{job}".encode())), "unit_key": _signed32(unit)}


def _describe_unit(job: str, run_date: date | None, target: str | None) -> str:
    return f"{job} {run_date or target or ''}".strip()


def run_unit(
    conn: psycopg.Connection,
    job: str,
    work: Callable[[psycopg.Connection], Outcome],
    invocation: Invocation,
    *,
    run_date: date | None = None,
    target: str | None = None,
    wait: bool = False,
    transactional: bool = True,
) -> UnitResult:
    """Run ``work`` for one unit under its lock, recorded in the ledger.

    With ``transactional`` it runs in one transaction: a failure
    leaves the unit's data untouched. The ledger rows are written outside that transaction, so a
    failed attempt is recorded too. Ctrl-C (or SIGTERM, SIGHUP: ``Interrupted``) cancels the running
    statement, rolls the unit back and marks it failed with the reason ("terminated by SIGTERM").
    """
    unit = {"job": job, "run_date": run_date, "target": target}
    keys = lock_keys(job, run_date, target)
    conn.execute(query("ledger.set_application_name"), {"name": f"pulsecart {_describe_unit(job, run_date, target)}"})
    if wait:
        conn.execute(query("ledger.wait_lock"), keys)
    elif not one_row(conn.execute(query("ledger.try_lock"), keys))[0]:
        raise _busy(conn, unit, keys)
    try:
        conn.execute(query("ledger.reap_dead"), unit)
        run_id = one_row(conn.execute(
            query("ledger.start"),
            unit | keys | {"trigger": invocation.trigger, "airflow_run_id": invocation.airflow_run_id,
                           "host": socket.gethostname(), "pid": os.getpid(), "version": __version__},
        ))[0]
        result = UnitResult(job, run_date, target, "running", run_id=run_id)
        started = time.monotonic()
        try:
            if transactional:
                with conn.transaction():
                    outcome = work(conn)
            else:
                outcome = work(conn)
            result.rows, result.details, result.error = outcome.rows, outcome.details, outcome.error
            result.status = "failed" if outcome.error else outcome.status or "succeeded"
        except KeyboardInterrupt as exc:
            result.interruption = Interrupted.of(exc)
            result.status, result.error = "failed", result.interruption.reason
        except Abandoned:
            result.status = "not run"
            conn.execute(query("ledger.forget"), {"id": run_id})
        except psycopg.OperationalError:
            raise  # the connection is gone: nothing more can be recorded
        except Exception as exc:  # noqa: BLE001 - any failure of the work is this unit's failure
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}".strip()
        finally:
            result.duration_s = round(time.monotonic() - started, 3)
            if result.status != "running" and not result.abandoned and not conn.closed:
                conn.execute(
                    query("ledger.finish"),
                    {"id": run_id, "status": result.status, "rows": result.rows,
                     "details": Jsonb(result.details), "error": result.error},
                )
        return result
    finally:
        if not conn.closed and not conn.broken:
            conn.execute(query("ledger.unlock"), keys)


def _busy(conn: psycopg.Connection, unit: dict, keys: dict) -> LockBusy:
    """Who holds the lock, as far as the server and the ledger know, and what to do about it."""
    what = _describe_unit(unit["job"], unit["run_date"], unit["target"])
    hint = "retry later or pass --wait"
    holder = conn.execute(query("ledger.holder"), unit | keys).fetchone()
    if holder is None:
        return LockBusy(f"{what} was locked by another session, which has just released it", hint="retry now")
    backend_pid, application_name, run_id, host, pid, trigger, started_at = holder
    session = f"server backend pid {backend_pid}" + (f", {application_name!r}" if application_name else "")
    if run_id is None:
        return LockBusy(f"{what} is locked by another session ({session})", hint=hint)
    message = (f"{what} is being run by run {run_id} ({trigger} on {host} pid {pid}, "
               f"started {when(started_at)}; {session})")
    if host == socket.gethostname() and pid is not None and not _process_exists(pid):
        return LockBusy(
            f"{message}; its client (pid {pid}) is gone but its server session still holds the lock "
            "until its last statement ends",
            hint=f"wait for it (or pass --wait), or end it now with SELECT pg_terminate_backend({backend_pid})")
    return LockBusy(message, hint=hint)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
