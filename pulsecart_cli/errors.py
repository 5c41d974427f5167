"""Domain errors and the exit codes they map to. The CLI edge is the only place that turns them
into process exit codes (see ``cli.PulsecartGroup``)."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_INCOMPLETE = 4
EXIT_CHECK_FAILED = 5
EXIT_NEEDS_OWNER = 6
EXIT_SUSPECT = 7  # status --check: no day failed or is stale, but a day's figures are far from its usual
EXIT_INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 143, SIGHUP 129


def first_line(error: BaseException | str | None, default: str = "") -> str:
    """The first line of an error's message (Google's ``.message`` when it has one), or ``default``."""
    if error is None or isinstance(error, str):
        text = error or ""
    else:
        text = str(getattr(error, "message", None) or error)
    lines = text.strip().splitlines()
    return lines[0] if lines else default


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, or a signal the CLI turns into one (SIGTERM, SIGHUP): what is in flight rolls back,
    is marked failed with ``reason``, and the process exits 128 + the signal's number.

    A ``KeyboardInterrupt`` subclass, so psycopg cancels the running statement on the server."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum

    @property
    def reason(self) -> str:
        if self.signum == signal.SIGINT:
            return "interrupted"
        return f"terminated by {signal.Signals(self.signum).name}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @classmethod
    def of(cls, exc: BaseException | None) -> "Interrupted":
        """The interruption ``exc`` stands for: a plain KeyboardInterrupt is Ctrl-C."""
        return exc if isinstance(exc, Interrupted) else cls()

    @classmethod
    def behind(cls, exc: BaseException) -> "Interrupted | None":
        """The signal behind ``exc``, when Python wrapped it in another error: the handler's exception can
        surface anywhere, e.g. as the RuntimeError of a class body's ``__set_name__`` during an import."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            if isinstance(current, KeyboardInterrupt):
                return cls.of(current)
            seen.add(id(current))
            current = current.__cause__ or current.__context__
        return None


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # the CLI turns each into ``Interrupted``


@contextmanager
def deferred_signals() -> Iterator[None]:
    """A step that must not be cut half-way (the embedded database's first initdb): a signal that arrives
    inside is acted on at its end, by the handler the CLI installed. Without Python handlers (the library
    used on its own) or off the main thread, nothing changes."""
    previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    handlers = {int(signum): handler for signum, handler in previous.items() if callable(handler)}
    if threading.current_thread() is not threading.main_thread() or len(handlers) < len(previous):
        yield
        return
    pending: list[int] = []
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, previous[signum])
        if pending:
            handlers[pending[0]](pending[0], None)


class PulsecartError(Exception):
    """An error the user can act on: printed as one line, never with a traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PulsecartError):
    """Bad input: a malformed date, window, URL, or option combination."""

    exit_code = EXIT_USAGE


class ConfigError(PulsecartError):
    """Configuration that is missing or malformed."""

    exit_code = EXIT_USAGE


class DatabaseError(PulsecartError):
    """The database is unreachable or refused what we asked."""


class SchemaNotMigrated(PulsecartError):
    """The database schema is behind the migrations this version ships."""


class SchemaTooNew(PulsecartError):
    """A newer pulsecart migrated the database: this version does not know its schema."""


class LockBusy(PulsecartError):
    """Another run holds the lock for this job and day."""

    exit_code = EXIT_LOCKED


class JobFailed(PulsecartError):
    """A job ran and at least one of its units failed."""


class ServiceError(PulsecartError):
    """An external service (Pub/Sub) said no."""


class CheckFailed(PulsecartError):
    """`status --check` found days that did not succeed or are stale."""

    exit_code = EXIT_CHECK_FAILED


class SuspectDays(PulsecartError):
    """`status --check` found only suspect days: they ran, but their figures are far from the usual."""

    exit_code = EXIT_SUSPECT


class SchemaMismatch(PulsecartError):
    """An existing application table lacks what pulsecart reads or writes (a column, a type)."""


class MissingPrivileges(PulsecartError):
    """`db migrate` needs something on a table its role does not own: the owner's SQL is attached."""

    exit_code = EXIT_NEEDS_OWNER

    def __init__(self, message: str, owner_sql: str):
        super().__init__(message)
        self.owner_sql = owner_sql
