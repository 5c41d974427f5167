"""The console entry point (``pulsecart`` and ``python -m pulsecart_cli``).

Signals are handled from its first line, before the CLI's imports (about a quarter of a second):
SIGTERM, SIGHUP or Ctrl-C at any moment of a run ends in one error line and 128 + the signal's number,
never a traceback, never SIGINT's 130 for a SIGTERM.
"""

import os
import signal
import sys
import threading
from types import FrameType

from pulsecart_cli.errors import HANDLED_SIGNALS, Interrupted

_first_signal: int | None = None
_arrivals: int | None = None  # the read end of the wakeup pipe, where each signal's number is written as it arrives


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (Airflow's timeout, "mark failed", a worker shutdown; kill, systemd, Kubernetes) and
    SIGHUP take Ctrl-C's path: the running statement is cancelled on the server, the work in flight
    rolls back and is marked failed, and the process exits 128 + the signal's number. Raised once:
    a repeated signal must not break the rollback and the ledger writes that follow the first. The
    first signal names the exit, even when Python swallowed it and a second one landed first."""
    global _first_signal
    _ignore_signals()
    if _first_signal is None:
        _first_signal = _first_to_arrive(signum)
    raise Interrupted(_first_signal)


def install_signal_handlers() -> None:
    """At the CLI edge only, never when the library is imported."""
    global _arrivals
    if _arrivals is None:
        _arrivals, write_end = os.pipe()
        os.set_blocking(_arrivals, False)
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, _raise_interrupted)
    sys.unraisablehook = _redeliver_swallowed_interruption


def _first_to_arrive(signum: int) -> int:
    """Signals that arrive while the main thread is inside one long C call are handled when it returns, in
    the order of their numbers (SIGHUP's 1 before SIGTERM's 15). The wakeup pipe has their arrival order."""
    try:
        arrived = os.read(_arrivals, 64) if _arrivals is not None else b""
    except OSError:  # nothing written (BlockingIOError), or a library took the wakeup fd
        arrived = b""
    return arrived[0] if arrived else signum


_command_over = threading.Event()


def _redeliver_swallowed_interruption(unraisable: "sys.UnraisableHookArgs") -> None:
    """Where Python cannot raise (a ``__del__``, a weakref callback such as the import system's module-lock
    cleanup), it prints the handler's exception and goes on: the signal would be lost and the run go on
    to the end. Send it again to the main thread, from outside, to land where it can be raised. (Off the
    main thread, an interruption is the main thread's echo: it already knows.)"""
    if _a_later_signal_ignored(unraisable.exc_value):
        return
    interruption = Interrupted.behind(unraisable.exc_value) if unraisable.exc_value else None
    if interruption is None:
        sys.__unraisablehook__(unraisable)
    elif threading.current_thread() is threading.main_thread() and not _command_over.is_set():
        install_signal_handlers()
        resend = threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident, _first_signal or interruption.signum))
        resend.daemon = True
        resend.start()


def _a_later_signal_ignored(exc: BaseException | None) -> bool:
    """Two signals pending at once: the first's handler ignores the rest, and Python reports the second as
    "Signal 15 ignored due to race condition", in the context of the first's interruption. Ignoring it is
    the intent: it is no swallowed signal to send again (that would cut the rollback short)."""
    text = str(exc) if isinstance(exc, OSError) else ""
    number = text.removeprefix("Signal ").removesuffix(" ignored due to race condition")
    return number != text and number.isdigit() and int(number) in HANDLED_SIGNALS


def _ignore_signals() -> None:
    """The command is over and its exit status decided: a signal now has nothing to stop. Python restores
    the default action for a handler of its own while it shuts down, which would end a finished run
    with 143 and no word; an ignored signal stays ignored."""
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def main() -> None:
    install_signal_handlers()
    try:
        import logging

        # psycopg logs what it ignores while rolling back on a lost connection; the error line says it all.
        logging.getLogger("psycopg").addHandler(logging.NullHandler())
        from pulsecart_cli.cli import app

        code = app(standalone_mode=False)
        _command_over.set()
        _ignore_signals()
    except BaseException as exc:  # while importing, or outside the command's own error handling
        _command_over.set()
        _ignore_signals()
        interruption = None if isinstance(exc, SystemExit) else Interrupted.behind(exc)
        if interruption is None:
            raise
        print(f"Error: {interruption.reason}", file=sys.stderr)
        code = interruption.exit_code
    sys.exit(code)
