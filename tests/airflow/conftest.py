"""A real Airflow 3 home (SQLite metadata DB) with the project's DAGs, shared by the DAG tests."""

import email
import email.policy
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import AIRFLOW, DAGS, airflow_uri


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PULSECART_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_PULSECART_CLI": f"{sys.executable} -m pulsecart_cli",
    })
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        result = subprocess.run([AIRFLOW, *command], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return env


@pytest.fixture
def airflow(airflow_home, db_url):
    """Run the airflow CLI with the connection pulsecart_db pointing at this test's database."""
    env = airflow_home | {"AIRFLOW_CONN_PULSECART_DB": airflow_uri(db_url)}

    def run(*args, extra_env=None):
        return subprocess.run([AIRFLOW, *args], env=env | (extra_env or {}), capture_output=True, text=True,
                              check=False, timeout=300)

    return run


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free local port that keeps every message it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=port)
        self.connection_uri = (f"smtp://127.0.0.1:{port}?disable_ssl=true&disable_tls=true"
                               "&from_email=airflow%40pulsecart.test&timeout=10&retry_limit=0")

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    sink.controller.start()
    try:
        yield sink
    finally:
        sink.controller.stop()
