"""Signals as a flag: the CLI's only signal code.

SIGINT (Ctrl-C), SIGTERM (Airflow's timeout, "mark failed", kill, systemd, Kubernetes) and SIGHUP only
record which came first. The command runs on a worker thread (``run``); the main thread waits for it and,
once a signal is recorded, cancels the statement running on each of the command's connections (``watch``),
every CANCEL_EVERY_S (a cancel that reaches the server before its statement does is dropped). The worker
sees an ordinary cancelled statement and rolls back; every statement it would start afterwards is refused
(``check``), except the ledger writes that record what the signal stopped (``shielded``). The
command then ends with one `Error:` line and 128 + the signal's number. A second Ctrl-C exits at once (130),
leaving the server to roll back what was in flight; so does the main thread when the command is still not
over GIVE_UP_AFTER_S after the signal (a database or service that stopped answering). Signals a parent
ignores (``nohup``, a background job) stay ignored.

A handler that only records cannot land inside a library, a destructor or an import, as one that raises can.
"""

import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Protocol

from pulsecart_cli.errors import Interrupted

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WAIT_S = 0.05  # how often the main thread looks at the flag while the command runs
CANCEL_EVERY_S = 0.5
CANCEL_TIMEOUT_S = 5.0
GIVE_UP_AFTER_S = 20.0  # after the signal; Airflow sends SIGKILL 60 s after its SIGTERM

_received: int | None = None  # the first signal's number
_decided = False  # the command's exit status is decided: a signal now has nothing to stop
_guard = threading.Lock()  # a connection is watched, cancelled or closed under it, never two at once
_local = threading.local()


class Cancellable(Protocol):
    def cancel_safe(self, *, timeout: float = ...) -> None: ...

    def close(self) -> None: ...


_watched: "weakref.WeakSet[Cancellable]" = weakref.WeakSet()
_shielded: "weakref.WeakSet[Cancellable]" = weakref.WeakSet()  # not cancelled: recording what a signal stopped


def requested() -> Interrupted | None:
    """The interruption a signal asked for; None before any signal (always, for the library on its own)."""
    return None if _received is None else Interrupted(_received)


def check() -> None:
    """Raise the interruption once a signal came, unless inside ``shielded``: called before every statement
    (``database``'s cursor) and between units of work that run no statement."""
    if _received is not None and not getattr(_local, "shielded", False):
        raise Interrupted(_received)


@contextmanager
def shielded(conn: Cancellable | None = None) -> Iterator[None]:
    """Statements that record what a signal stopped (the ledger's failure row, the unlock): ``check`` lets
    them run on this thread, and on ``conn`` only the signal's first cancel can stop one (it then runs again:
    ``units._bookkeeping``)."""
    before = getattr(_local, "shielded", False)
    _local.shielded = True
    if conn is not None:
        with _guard:
            _shielded.add(conn)
    try:
        yield
    finally:
        _local.shielded = before
        if conn is not None:
            with _guard:
                _shielded.discard(conn)


def watch(conn: Cancellable) -> None:
    """A new connection of the command: its statement is cancelled when a signal comes. Refused after one."""
    with _guard:
        check()
        _watched.add(conn)


def close(conn: Cancellable) -> None:
    """Close a watched connection; never while the main thread cancels its statement."""
    with _guard:
        _watched.discard(conn)
        conn.close()


def decided() -> None:
    """The command's exit status is decided (its `Error:` line is about to be printed): later signals change
    nothing."""
    global _decided
    _decided = True


def _record(signum: int, frame: object) -> None:
    global _received
    if _decided:
        return
    if _received is None:
        _received = signum
    elif signum == signal.SIGINT:
        _exit_now(128 + signal.SIGINT, "interrupted again: exiting without cleanup")


def _exit_now(code: int, reason: str) -> None:
    os.write(2, f"Error: {reason} (the database rolls back what was in flight)\n".encode())
    os._exit(code)


def install() -> None:
    """At the CLI edge only, never when the library is imported."""
    for signum in HANDLED_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _record)


def run(command: Callable[[], int]) -> int:
    """Run ``command`` on a worker thread, cancelling its statements when a signal comes; its exit code."""
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(_exit_code(command)), name="pulsecart", daemon=True)
    worker.start()
    signalled_at = cancelled_at = 0.0
    while worker.is_alive():
        worker.join(WAIT_S)
        if _received is None or _decided:
            continue
        now = time.monotonic()
        signalled_at = signalled_at or now
        if now - cancelled_at >= CANCEL_EVERY_S:
            _cancel_statements(shielded_too=not cancelled_at)  # the first stops what runs, a ledger write too
            cancelled_at = now
        if now - signalled_at > GIVE_UP_AFTER_S:
            interruption = Interrupted(_received)
            _exit_now(interruption.exit_code, f"{interruption.reason}: still not stopped {GIVE_UP_AFTER_S:g} s later, "
                                              "exiting without cleanup")
    for signum in HANDLED_SIGNALS:  # the exit status is decided: a signal now has nothing to stop
        signal.signal(signum, signal.SIG_IGN)
    return codes[0] if codes else 1


def _cancel_statements(shielded_too: bool) -> None:
    with _guard:
        for conn in [conn for conn in _watched if shielded_too or conn not in _shielded]:
            with suppress(Exception):  # its session ended, or the server does not answer: nothing runs there
                conn.cancel_safe(timeout=CANCEL_TIMEOUT_S)


def _exit_code(command: Callable[[], int]) -> int:
    try:
        return command()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException as exc:  # noqa: BLE001 - outside the command's own error handling (an import, say)
        interruption = requested()
        decided()
        print(f"Error: {interruption.reason if interruption else f'unexpected {type(exc).__name__}: {exc}'}",
              file=sys.stderr)
        return interruption.exit_code if interruption else 1
