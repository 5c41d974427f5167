"""Every usual form of the Airflow connection `pulsecart_db` works in a task: the DAGs pass
`{{ conn.pulsecart_db.get_uri() }}` to pulsecart, and Airflow writes extras that are not all strings as one
`__extra__` JSON parameter, which libpq alone refuses. Each form runs the metrics DAG (`airflow dags test`: the sensor, which gets its own environment, and the
job); tests/airflow/test_scheduler_connections.py runs each on a real scheduler."""

import json
import tempfile
from datetime import date
from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.helpers import insert_events, utc

pytestmark = pytest.mark.slow   # one `airflow dags test` per form

PASSWORD = "p@ss:w/o%r#d"  # noqa: S105 - a test role's, with the characters a URI must encode


def forms(db_url: str) -> dict[str, dict[str, str]]:
    """Name: the environment that defines `pulsecart_db` in that form."""
    parts = conninfo_to_dict(db_url)
    socket_dir, db = parts["host"], parts["dbname"]
    assert socket_dir.startswith("/"), "the embedded server listens on a Unix socket"
    # the Auth Proxy's socket path; short, as a socket's path must be (107 bytes)
    cloudsql = Path(tempfile.mkdtemp(prefix="cs", dir="/tmp")) / "cloudsql" / "proj:europe-west1:main"
    cloudsql.parent.mkdir(parents=True)
    cloudsql.symlink_to(socket_dir)
    as_json = {"conn_type": "postgres", "login": "pulsecart_pw", "password": PASSWORD, "host": socket_dir,
               "schema": db, "extra": {"sslmode": "disable", "connect_timeout": 10,
                                       "options": "-c statement_timeout=60000", "cursor": "dictcursor"}}
    uris = {
        "?host= socket": f"postgresql://postgres@/{db}?host={socket_dir}",
        "?host= socket and port": f"postgresql://postgres@/{db}?host={socket_dir}&port={parts.get('port', 5432)}",
        "/cloudsql socket": f"postgresql://postgres@/{db}?host={cloudsql}",
        "percent-encoded socket host": f"postgresql://postgres@{quote(socket_dir, safe='')}/{db}",
        "password with @ : / % #": f"postgresql://pulsecart_pw:{quote(PASSWORD, safe='')}@/{db}?host={socket_dir}",
        "sslmode and libpq options": (f"postgresql://postgres@/{db}?host={socket_dir}&sslmode=disable"
                                      f"&application_name=airflow-task&connect_timeout=10"),
    }
    return {name: {"AIRFLOW_CONN_PULSECART_DB": uri} for name, uri in uris.items()} | {
        "JSON form (extras not all strings)": {"AIRFLOW_CONN_PULSECART_DB": json.dumps(as_json)}}


def test_every_usual_connection_form_runs_a_task(airflow, conn, db_url):
    conn.execute(sql.SQL("DROP ROLE IF EXISTS pulsecart_pw"))
    conn.execute(sql.SQL("CREATE ROLE pulsecart_pw LOGIN SUPERUSER PASSWORD {}").format(sql.Literal(PASSWORD)))
    insert_events(conn, [("a", "order.placed", utc(2025, 3, 3, 12), {"total": 5}),
                         ("b", "product.viewed", utc(2025, 3, 4, 0, 45))])   # the sensor's check passes
    failures = {}
    try:
        for name, env in forms(db_url).items():
            before = conn.execute("SELECT count(*) FROM job_runs WHERE job = 'metrics' AND status = 'succeeded'"
                                  ).fetchone()[0]
            result = airflow("dags", "test", "pulsecart_daily_metrics", "2025-03-04", extra_env=env)
            after = conn.execute("SELECT count(*) FROM job_runs WHERE job = 'metrics' AND status = 'succeeded'"
                                 ).fetchone()[0]
            if result.returncode != 0 or after != before + 1:
                failures[name] = (result.stdout + result.stderr)[-1500:]
            assert PASSWORD not in result.stdout + result.stderr, name
    finally:
        conn.execute("DROP OWNED BY pulsecart_pw")
        conn.execute("DROP ROLE pulsecart_pw")
    assert failures == {}
    assert conn.execute("SELECT DISTINCT run_date FROM job_runs").fetchall() == [(date(2025, 3, 3),)]
