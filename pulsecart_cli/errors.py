"""Domain errors and the exit codes they map to. The CLI edge is the only place that turns them
into process exit codes (see ``cli.PulsecartGroup``)."""

import signal

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


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP (``signals``): what is in flight rolls back, is marked failed with
    ``reason``, and the process exits 128 + the signal's number. A BaseException, as KeyboardInterrupt is:
    no ``except Exception`` takes it for a failure of the work."""

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
