"""Where the database is and how to talk to it."""

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from pulsecart_cli import embedded, signals
from pulsecart_cli.errors import ConfigError, DatabaseError, first_line
from pulsecart_cli.queries import query
from pulsecart_cli.redaction import URL_ENV, redact

# libpq's TCP keepalives, unless the URL sets its own: a lost server is noticed in about a minute.
CLIENT_KEEPALIVES: dict[str, Any] = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3"}
# The server's side: a lost client is noticed, even during a long statement (its locks are freed).
SERVER_KEEPALIVES = {"idle": "60", "interval": "10", "count": "6"}
CLIENT_CHECK_INTERVAL = "10s"
SCHEMA_ENV = "PULSECART_SCHEMA"
DEFAULT_SCHEMA = "pulsecart"


def schema_name() -> str:
    """pulsecart's own schema: $PULSECART_SCHEMA, default pulsecart. The application's tables stay in public."""
    name = os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or name in ("public", "pg_catalog", "information_schema"):
        raise ConfigError(f"{SCHEMA_ENV}={name!r} is not a schema pulsecart can use",
                          hint="a lower-case name of letters, digits and _ (not public)")
    return name


def search_path() -> str:
    """Every pulsecart session's search_path: its own schema, then the application's."""
    return f"{schema_name()},public"


def libpq_options() -> str:
    """The search_path as libpq connection options, for a plain psycopg.connect (tests, the benchmark)."""
    return f"-c search_path={search_path()}"


def under_airflow() -> bool:
    return bool(os.environ.get("AIRFLOW_CTX_DAG_ID"))


def resolve_url(cli_url: str | None) -> str:
    """The database URL: --database-url, $PULSECART_DATABASE_URL, or the embedded server."""
    url = cli_url or os.environ.get(URL_ENV)
    if url:
        url = _airflow_extras_as_libpq(url)
        _check_url(url)
        return url
    if under_airflow():
        raise ConfigError(
            f"no database URL under Airflow: set {URL_ENV} (the DAGs take it from the pulsecart_db connection)"
        )
    uri, started = embedded.start()
    if started:
        print(f"pulsecart: started the embedded PostgreSQL in {embedded.data_dir()}", file=sys.stderr)
    return uri


def _airflow_extras_as_libpq(url: str) -> str:
    """An Airflow connection's URI (``{{ conn.pulsecart_db.get_uri() }}``) carries extras that are not all
    strings (the JSON form's ``"connect_timeout": 10``, say) as one ``__extra__`` JSON parameter, which
    libpq refuses. Its libpq settings (sslmode, options, host, …) become URI parameters; the rest are
    options of Airflow's hooks, not the database's, and are left out."""
    scheme, netloc, path, query, fragment = urlsplit(url)
    if scheme not in ("postgres", "postgresql") or "__extra__" not in query:
        return url
    params = parse_qsl(query, keep_blank_values=True)
    extras: dict[str, Any] = {}
    for key, value in params:
        if key == "__extra__":
            try:
                decoded = json.loads(value)
            except ValueError as exc:
                raise ConfigError(f"malformed database URL {redact(url)!r}: __extra__ is not JSON") from exc
            extras.update(decoded if isinstance(decoded, dict) else {})
    known = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    kept = [(k, v) for k, v in params if k != "__extra__"]
    kept += [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in extras.items()
             if k in known and v is not None and k not in dict(kept)]
    return urlunsplit((scheme, netloc, path, urlencode(kept, quote_via=quote), fragment))


def _port_ok(host: str) -> bool:
    """One entry of a URL's host list (libpq takes several, comma-separated): host, host:port, [v6]:port."""
    port = host.rpartition("]")[2] if host.startswith("[") else host
    port = port.rpartition(":")[2] if ":" in port else ""
    return not port or (port.isdigit() and int(port) <= 65535)


def _check_url(url: str) -> None:
    """Refuse what libpq would misread or quote back (with the password) in its error."""
    problem = None
    if re.match(r"^postgres(ql)?://", url):
        authority = url.partition("://")[2].partition("?")[0]
        user_info = authority.rpartition("@")[0]
        if re.search(r"%(?![0-9A-Fa-f]{2})", url):
            problem = "a '%' that starts no percent-escape (write '%' as %25)"
        elif "@" in user_info or "/" in user_info:
            problem = "an unencoded '@' or '/' in the user name or password (write them as %40 and %2F)"
        elif not all(_port_ok(host) for host in authority.rpartition("@")[2].partition("/")[0].split(",")):
            problem = "a port is not a number from 0 to 65535"
    elif "=" not in url:  # libpq's key=value form is accepted too
        problem = "neither a postgresql:// URL nor libpq key=value settings"
    if problem:
        raise ConfigError(f"malformed database URL {redact(url)!r}: {problem}",
                          hint="expected postgresql://user:password@host:port/dbname")


class _StoppableCursor(psycopg.Cursor[Any]):
    """Starts no statement once a signal came (``signals.check``); the one running then is cancelled."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        signals.check()
        return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        signals.check()
        super().executemany(*args, **kwargs)


def connect(url: str) -> psycopg.Connection:
    """An autocommit connection with keepalives both ways; callers open transactions explicitly. Its
    statements stop when a signal comes (``signals``): close it with ``signals.close``."""
    try:
        given = conninfo_to_dict(url)
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="pulsecart",
                               cursor_factory=_StoppableCursor,
                               **{k: v for k, v in CLIENT_KEEPALIVES.items() if k not in given})
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"malformed database URL {redact(url)!r}: {first_line(exc)}") from exc
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"cannot connect to the database at {redact(url)}: {first_line(exc, 'connection failed')}",
            hint="check the Airflow connection pulsecart_db" if under_airflow() else
                 f"check --database-url / {URL_ENV}, or unset both to use the embedded database",
        ) from exc
    try:
        signals.watch(conn)
        conn.execute(query("session.setup"), SERVER_KEEPALIVES | {"search_path": search_path()})
        if conn.info.server_version >= 140000:
            conn.execute(query("session.check_client"), {"interval": CLIENT_CHECK_INTERVAL})
    except BaseException:
        signals.close(conn)
        raise
    return conn


@contextmanager
def connection(url: str) -> Iterator[psycopg.Connection]:
    conn = connect(url)
    try:
        yield conn
    finally:
        signals.close(conn)
