"""The unit runner: one job's work on one unit (a day or a target) under the unit's advisory lock, in
its own transaction, recorded in the ledger (job_runs) whatever happens."""

import os
import socket
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from pulsecart_cli import __version__, signals
from pulsecart_cli.dates import when
from pulsecart_cli.errors import Interrupted, LockBusy
from pulsecart_cli.ledger import Invocation, RunStatus, UnitResult, WorkOutput
from pulsecart_cli.queries import one_row, query


class NotRun(Exception):
    """Raised by a unit's work to drop it: rolled back and removed from the ledger, as if never started."""


class ConnectionLost(Exception):
    """The connection died while a unit ran, after its ledger row ``run_id`` was written. Whether its
    work committed (the loss may have come with the COMMIT's answer) only a new connection can tell."""

    def __init__(self, run_id: int, error: Exception):
        super().__init__(str(error))
        self.run_id, self.error = run_id, error


def _signed32(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


def lock_keys(job: str, run_date: date | None, target: str | None) -> dict[str, int]:
    unit = run_date.toordinal() if run_date else zlib.crc32((target or "").encode())
    return {"job_key": _signed32(zlib.crc32(f"pulsecart:{job}".encode())), "unit_key": _signed32(unit)}


def _describe_unit(job: str, run_date: date | None, target: str | None) -> str:
    return " ".join(str(part) for part in (job, target, run_date) if part)  # "aggregate forget 2025-03-07"


def run_unit(
    conn: psycopg.Connection,
    job: str,
    work: Callable[[psycopg.Connection], WorkOutput],
    invocation: Invocation,
    *,
    run_date: date | None = None,
    target: str | None = None,
    wait: bool = False,
    transactional: bool = True,
) -> UnitResult:
    """Run ``work`` for one unit under its lock, recorded in the ledger.

    With ``transactional`` it runs in one transaction: a failure leaves the unit's data untouched. A success
    is recorded inside that transaction (data and ledger commit together); the start and a failure are
    written outside it, so a failed attempt is recorded too. A signal (``signals``) cancels the running
    statement: the unit rolls back (with ``transactional``) and is marked failed with the reason
    ("terminated by SIGTERM"). Raises
    ``Interrupted`` when a signal came before the unit started (no ledger row), ``LockBusy``, and
    ``ConnectionLost``.
    """
    unit = {"job": job, "run_date": run_date, "target": target}
    keys = lock_keys(job, run_date, target)
    with _cancel_as_interruption():
        conn.execute(query("ledger.set_application_name"), {"name": f"pulsecart {_describe_unit(job, run_date, target)}"})
        if wait:
            conn.execute(query("ledger.wait_lock"), keys)
        elif not one_row(conn.execute(query("ledger.try_lock"), keys))[0]:
            raise _busy(conn, unit, keys)
    try:
        with _cancel_as_interruption():  # atomic: a cancelled start wrote no row
            conn.execute(query("ledger.reap_dead"), unit)
            run_id = one_row(conn.execute(
                query("ledger.start"),
                unit | keys | {"trigger": invocation.trigger, "airflow_run_id": invocation.airflow_run_id,
                               "host": socket.gethostname(), "pid": os.getpid(), "version": __version__},
            ))[0]
        return _run_started(conn, run_id, UnitResult(job, run_date, target, RunStatus.RUNNING, run_id=run_id),
                            work, transactional)
    finally:
        _bookkeeping(conn, lambda: _unlock(conn, keys))


@contextmanager
def _cancel_as_interruption() -> Iterator[None]:
    """A statement cancelled by the signal (not by a statement_timeout, say) is the interruption."""
    try:
        yield
    except psycopg.errors.QueryCanceled as exc:
        interruption = signals.requested()
        if interruption is None:
            raise
        raise interruption from exc


def _run_started(conn: psycopg.Connection, run_id: int, result: UnitResult,
                 work: Callable[[psycopg.Connection], WorkOutput], transactional: bool) -> UnitResult:
    started = time.monotonic()
    try:
        if transactional:
            with conn.transaction():
                output = work(conn)
                _take_output(result, output)
                if not output.error:
                    # Recorded inside the work's transaction: data and ledger commit together, so a
                    # connection lost after the commit cannot leave them disagreeing.
                    result.duration_s = round(time.monotonic() - started, 3)
                    _finish(conn, result)
            if not output.error:
                result.interruption = signals.requested()  # a signal during its COMMIT: it committed
                return result
        else:
            _take_output(result, work(conn))
    except NotRun:
        _bookkeeping(conn, lambda: conn.execute(query("ledger.forget"), {"id": run_id}))
        result.status = RunStatus.NOT_RUN
        return result
    except (Exception, Interrupted) as exc:  # any failure of the work is this unit's failure
        if conn.broken and not isinstance(exc, Interrupted):  # nothing more can be recorded on it
            raise ConnectionLost(run_id, exc) from exc
        result.status = RunStatus.FAILED
        result.error = f"{type(exc).__name__}: {exc}".strip()
    result.interruption = signals.requested()
    if result.interruption is not None and result.status == RunStatus.FAILED:  # the signal's doing
        result.error = result.interruption.reason
    result.duration_s = round(time.monotonic() - started, 3)
    if not _bookkeeping(conn, lambda: _finish(conn, result)):
        # Its row no longer says running: its transaction committed after all (the COMMIT's error was not
        # the server's last word). The row lock and the condition let PostgreSQL decide.
        return _bookkeeping(conn, lambda: committed_result(conn, run_id, result.job, result.run_date)) or result
    return result


T = TypeVar("T")


def _bookkeeping(conn: psycopg.Connection, statement: Callable[[], T]) -> T:
    """A ledger write or the unlock, which must run after a signal too. Of the main thread's cancels only
    the signal's first can land on it (``signals.shielded``): it then runs again."""
    with signals.shielded(conn):
        try:
            return statement()
        except psycopg.errors.QueryCanceled:
            if signals.requested() is None:
                raise
            return statement()


def committed_result(conn: psycopg.Connection, run_id: int, job: str, run_date: date | None) -> UnitResult | None:
    """A unit's result as its ledger row reads on ``conn``, when the row says it completed: a success is
    written in the unit's own transaction, so it is there only if that transaction committed. None when
    it did not, or ``conn`` is gone."""
    if conn.closed or conn.broken:
        return None
    row = conn.execute(query("ledger.outcome"), {"id": run_id}).fetchone()
    if row is None:
        return None
    status, target, rows, details, duration_s = row
    result = UnitResult(job, run_date, target, RunStatus(status), rows=rows or 0, duration_s=duration_s or 0.0,
                        details=details, run_id=run_id)
    return result if result.completed else None


def _unlock(conn: psycopg.Connection, keys: dict[str, int]) -> None:
    """A session's advisory lock ends with the session: a connection lost after the unit's commit has
    released it, and the unit's result stands (the next statement on ``conn`` reports the loss)."""
    if conn.broken or conn.closed:
        return
    try:
        conn.execute(query("ledger.unlock"), keys)
    except psycopg.OperationalError:
        if not conn.broken:
            raise


def _take_output(result: UnitResult, output: WorkOutput) -> None:
    result.rows, result.details, result.error = output.rows, output.details, output.error
    result.status = RunStatus.FAILED if output.error else output.status or RunStatus.SUCCEEDED


def _finish(conn: psycopg.Connection, result: UnitResult) -> bool:
    """Record how the unit ended, unless its row no longer says running (False)."""
    return conn.execute(query("ledger.finish"), {
        "id": result.run_id, "status": result.status, "rows": result.rows, "details": Jsonb(result.details),
        "error": result.error}).fetchone() is not None


@dataclass(frozen=True)
class _Holder:
    """A row of ``ledger.holder``: the session holding a unit's lock and, when it is a run, its ledger row."""

    backend_pid: int
    application_name: str | None
    id: int | None
    host: str | None
    pid: int | None
    trigger: str | None
    started_at: datetime | None


def _busy(conn: psycopg.Connection, unit: dict[str, Any], keys: dict[str, int]) -> LockBusy:
    """Who holds the lock, as far as the server and the ledger know, and what to do about it."""
    what = _describe_unit(unit["job"], unit["run_date"], unit["target"])
    hint = "retry later or pass --wait"
    holder = conn.cursor(row_factory=class_row(_Holder)).execute(query("ledger.holder"), unit | keys).fetchone()
    if holder is None:
        return LockBusy(f"{what} was locked by another session, which has just released it", hint="retry now")
    session = f"server backend pid {holder.backend_pid}" + (
        f", {holder.application_name!r}" if holder.application_name else "")
    if holder.id is None:
        return LockBusy(f"{what} is locked by another session ({session})", hint=hint)
    message = (f"{what} is being run by run {holder.id} ({holder.trigger} on {holder.host} pid {holder.pid}, "
               f"started {when(holder.started_at)}; {session})")
    if holder.host == socket.gethostname() and holder.pid is not None and not _process_exists(holder.pid):
        return LockBusy(
            f"{message}; its client (pid {holder.pid}) is gone but its server session still holds the lock "
            "until its last statement ends",
            hint=f"wait for it (or pass --wait), or end it now with SELECT pg_terminate_backend({holder.backend_pid})")
    return LockBusy(message, hint=hint)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
