"""The unit runner: one job's work on one unit (a day or a target) under the unit's advisory lock, in
its own transaction, recorded in the ledger (job_runs) whatever happens."""

import os
import select
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from pulsecart_cli import __version__
from pulsecart_cli.dates import when
from pulsecart_cli.errors import Interrupted, LockBusy
from pulsecart_cli.ledger import Invocation, Outcome, RunStatus, UnitResult
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
    work: Callable[[psycopg.Connection], Outcome],
    invocation: Invocation,
    *,
    run_date: date | None = None,
    target: str | None = None,
    wait: bool = False,
    transactional: bool = True,
    cancelled_by: Callable[[], Interrupted | None] = lambda: None,
) -> UnitResult:
    """Run ``work`` for one unit under its lock, recorded in the ledger.

    With ``transactional`` it runs in one transaction: a failure
    leaves the unit's data untouched. A success is recorded inside that transaction (data and ledger
    commit together); the start and a failure are written outside it, so a failed attempt is recorded too. Ctrl-C (or SIGTERM, SIGHUP: ``Interrupted``) cancels the running
    statement, rolls the unit back and marks it failed with the reason ("terminated by SIGTERM").
    ``cancelled_by``: for a unit on another thread, whose statements the main thread cancels when a signal
    arrives: the interruption (None: none) that a statement cancelled anywhere in the unit stands for,
    its ledger writes included.
    """
    unit = {"job": job, "run_date": run_date, "target": target}
    keys = lock_keys(job, run_date, target)
    conn.execute(query("ledger.set_application_name"), {"name": f"pulsecart {_describe_unit(job, run_date, target)}"})
    if wait:
        conn.execute(query("ledger.wait_lock"), keys)
    elif not one_row(conn.execute(query("ledger.try_lock"), keys))[0]:
        raise _busy(conn, unit, keys)
    bookkeeping = _Bookkeeping(conn, cancelled_by)
    result: UnitResult | None = None
    try:
        conn.execute(query("ledger.reap_dead"), unit)
        try:
            run_id = one_row(conn.execute(
                query("ledger.start"),
                unit | keys | {"trigger": invocation.trigger, "airflow_run_id": invocation.airflow_run_id,
                               "host": socket.gethostname(), "pid": os.getpid(), "version": __version__},
            ))[0]
        except KeyboardInterrupt as exc:  # the row may stand without its id having reached us
            interruption = Interrupted.of(exc)
            failed = bookkeeping.run(lambda: conn.execute(query("ledger.fail_started_here"),
                                                          unit | {"error": interruption.reason}).fetchone())
            if failed is None:  # no row: the unit never started
                raise
            return UnitResult(job, run_date, target, RunStatus.FAILED, run_id=failed[0], error=interruption.reason,
                              interruption=interruption)
        result = UnitResult(job, run_date, target, RunStatus.RUNNING, run_id=run_id)
        started = time.monotonic()
        recorded: RunStatus | None = None  # the status the ledger row holds, once written
        try:
            if transactional:
                with conn.transaction():
                    outcome = work(conn)
                    _take_outcome(result, outcome)
                    if not outcome.error:
                        # Recorded inside the work's transaction: data and ledger commit together, so a
                        # connection lost after the commit cannot leave them disagreeing.
                        result.duration_s = round(time.monotonic() - started, 3)
                        _finish(conn, result)
                        recorded = result.status
            else:
                outcome = work(conn)
                _take_outcome(result, outcome)
        except KeyboardInterrupt as exc:
            _read_the_cancelled_answer(conn)
            result.interruption = Interrupted.of(exc)
            result.status, result.error = RunStatus.FAILED, result.interruption.reason
        except NotRun:
            result.status = RunStatus.NOT_RUN
            bookkeeping.run(lambda: conn.execute(query("ledger.forget"), {"id": run_id}))
        except Exception as exc:  # any failure of the work is this unit's failure
            if conn.broken:  # nothing more can be recorded on it
                raise ConnectionLost(run_id, exc) from exc
            result.interruption = cancelled_by() if isinstance(exc, psycopg.errors.QueryCanceled) else None
            result.status = RunStatus.FAILED
            result.error = result.interruption.reason if result.interruption else f"{type(exc).__name__}: {exc}".strip()
        finally:
            if result.status != recorded:
                result.duration_s = round(time.monotonic() - started, 3)
                if recorded is not None and (conn.closed or conn.broken):
                    result.status = RunStatus.UNKNOWN
                elif recorded is not None and bookkeeping.run(
                        lambda: committed_result(conn, run_id, job, run_date)) is not None:
                    # Ctrl-C or SIGTERM while its COMMIT was under way, and the COMMIT landed: it stands.
                    result.status, result.error = recorded, None
                elif result.status != RunStatus.RUNNING and not result.not_run and not conn.closed:
                    bookkeeping.run(lambda: _finish(conn, result))
        return result
    finally:
        bookkeeping.run(lambda: _unlock(conn, keys))
        bookkeeping.keep_interruption(result)


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


T = TypeVar("T")


class _Bookkeeping:
    """The ledger writes and the unlock around a unit's work. A signal stops the statement that runs when
    it lands: on the main thread psycopg cancels it, on a window's worker the main thread's cancel does.
    Landing on a ledger write or the unlock, it left the row 'running' and the day out of the summary.
    Only the first signal is acted on and one cancel stops one statement: what is left of its answer is
    read, the statement runs again, and a signal that landed here is kept for the unit's result. The
    answer of a statement a signal stopped before (outside the work) is read first; None: the connection
    had to be given up."""

    def __init__(self, conn: psycopg.Connection, cancelled_by: Callable[[], Interrupted | None]):
        self.conn, self.cancelled_by = conn, cancelled_by
        self.interruption: Interrupted | None = None

    def run(self, statement: Callable[[], T]) -> T | None:
        if self._given_up():
            return None
        try:
            return statement()
        except psycopg.errors.QueryCanceled:
            if self.cancelled_by() is None:
                raise
            self.interruption = self.interruption or self.cancelled_by()
        except KeyboardInterrupt as exc:
            self.interruption = self.interruption or Interrupted.of(exc)
        return None if self._given_up() else statement()

    def _given_up(self) -> bool:
        _read_the_cancelled_answer(self.conn)
        return self.conn.closed

    def keep_interruption(self, result: "UnitResult | None") -> None:
        if self.interruption is not None and result is not None and result.interruption is None:
            result.interruption = self.interruption


CANCELLED_ANSWER_WAIT_S = 5.0  # as psycopg waits for a statement it cancelled


def _read_the_cancelled_answer(conn: psycopg.Connection) -> None:
    """psycopg cancels a statement that a signal interrupts and reads its answer, except when the signal
    lands in psycopg's own code after sending it: the cancel goes out, the answer stays unread, and every
    later statement fails with "another command is already in progress". Read it, and end the transaction
    it was in (or one the signal left open before its COMMIT was sent: a read on it would see the unit's
    own uncommitted success). With no answer within 5 s, give the connection up (the server rolls back
    and releases its locks)."""
    if conn.closed:
        return
    pgconn = conn.pgconn
    deadline = time.monotonic() + CANCELLED_ANSWER_WAIT_S
    try:
        while pgconn.is_busy():
            if not select.select([pgconn.socket], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError
            pgconn.consume_input()
        while pgconn.get_result() is not None:
            pass
        if pgconn.transaction_status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
            conn.execute(query("session.roll_back"))
    except (TimeoutError, psycopg.Error):
        conn.close()


def _take_outcome(result: UnitResult, outcome: Outcome) -> None:
    result.rows, result.details, result.error = outcome.rows, outcome.details, outcome.error
    result.status = RunStatus.FAILED if outcome.error else outcome.status or RunStatus.SUCCEEDED


def _finish(conn: psycopg.Connection, result: UnitResult) -> None:
    conn.execute(query("ledger.finish"), {"id": result.run_id, "status": result.status, "rows": result.rows,
                                          "details": Jsonb(result.details), "error": result.error})


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
