"""docs/operations.md's "Run a DAG locally" block, read from the doc and run as typed: its commands after
`make install-dev` (the venv running this test is what that makes), in one bash process, in the doc's order.

What differs from a reader's shell, each asserted: the working directory is the repository when this venv is
its `.venv`, else a directory holding links `dags` and `.venv` to the repository's DAGs and this venv;
PULSECART_HOME is a temporary directory, so `pulsecart dev db url` names an embedded server of this test's
(migrated and seeded with 2025-03-03 and 2025-03-04 as `make demo` does it, stopped at the end); `mktemp -d`
makes AIRFLOW_HOME in this test's temporary directory; the emulator address is the test's emulator, on which
the doc's project `demo` has the topics `pulsecart pubsub setup` makes. No AIRFLOW_*, PULSECART_* or Pub/Sub
setting of the environment running the tests reaches the block."""

import os
import shlex
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from pulsecart_cli import pubsub
from tests.db.test_cli_docs import REPO
from tests.db.test_docs_examples import AIRFLOW_LOCAL, BASH, EXCLUDED, INSTALLS, blocks, shell_lines
from tests.helpers import connect, event, publish_dead_letters

pytestmark = pytest.mark.slow   # three `airflow dags test` runs: about a minute

DOC = "docs/operations.md"
VENV = Path(sys.prefix)
PULSECART = str(VENV / "bin" / "pulsecart")
PROJECT = "demo"   # the doc's AIRFLOW_VAR_PULSECART_GCP_PROJECT
DAG_IDS = ["pulsecart_nightly_aggregation", "pulsecart_daily_metrics", "pulsecart_dead_letter_reconciliation"]
# Text of the doc -> what runs instead. Each is used exactly once.
SUBSTITUTIONS = {"PUBSUB_EMULATOR_HOST=127.0.0.1:8085": "PUBSUB_EMULATOR_HOST={emulator}"}
# The days the runs for logical date 2025-03-04 need: the prior day, and the next (check-complete waits for an
# event past 2025-03-04 00:30). The seed of `make demo`, smaller.
SEED = ["seed", "--start", "2025-03-03", "--days", "2", "--users", "200", "--events-per-day", "1000", "--seed", "42"]


def the_block() -> list[tuple[int, str]]:
    """The commands of the doc's block that runs `airflow dags test`, as test_docs_examples.py reads them."""
    found = [shell_lines(body, line) for doc, line, language, body in blocks()
             if doc == DOC and language == "sh" and "airflow dags test" in body]
    assert len(found) == 1, f"{DOC} should have one sh block running `airflow dags test`, not {len(found)}"
    return [(number, command) for number, command, _ in found[0]]


def substituted(command: str, values: dict[str, str]) -> str:
    for text, replacement in SUBSTITUTIONS.items():
        command = command.replace(text, replacement.format(**values))
    return command


def script(commands: list[tuple[int, str]], statuses: Path, env_dump: Path) -> str:
    """The commands one after another; each one's exit code goes to ``statuses`` and a failure ends the script
    (the lines after it would run outside the AIRFLOW_HOME it sets). Then the environment they exported."""
    lines = [f"exec 3>{shlex.quote(str(statuses))}"]
    for number, command in commands:
        lines += [command, f'status=$?; echo "{number} $status" >&3; [ "$status" -eq 0 ] || exit "$status"']
    return "\n".join([*lines, f"env -0 >{shlex.quote(str(env_dump))}", ""])


def working_directory(tmp_path: Path) -> Path:
    """Where `$PWD/dags` is the repository's DAGs and `.venv` the venv running this test."""
    if (REPO / ".venv").resolve() == VENV.resolve():
        return REPO
    linked = tmp_path / "checkout"
    linked.mkdir()
    (linked / "dags").symlink_to(REPO / "dags")
    (linked / ".venv").symlink_to(VENV)
    return linked


def pulsecart(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([PULSECART, *args], env=env, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"pulsecart {' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def clean_environment(tmp_path: Path) -> dict[str, str]:
    """This process's environment but for Airflow's, pulsecart's and Pub/Sub's settings; a HOME and TMPDIR
    of the test's (Airflow falls back to ~/airflow, and `mktemp -d` makes AIRFLOW_HOME in TMPDIR)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "PULSECART_", "PUBSUB_", "GOOGLE_CLOUD_PROJECT"))}
    for name in ("home", "tmp"):
        (tmp_path / name).mkdir(exist_ok=True)
    return env | {"HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}


@pytest.fixture
def embedded_home(tmp_path):
    """An embedded PostgreSQL of this test's, prepared as `make demo` prepares its own; stopped afterwards."""
    home = tmp_path / "pulsecart"
    env = clean_environment(tmp_path) | {"PULSECART_HOME": str(home)}
    try:
        pulsecart("db", "migrate", env=env)
        pulsecart(*SEED, env=env)
        yield home
    finally:
        stopped = pulsecart("dev", "db", "stop", env=env)
    assert stopped.stdout.strip() == "stopped"


def test_the_run_a_dag_locally_block_runs_as_typed(tmp_path, embedded_home, pubsub_emulator):
    commands = the_block()
    assert commands[0][1] == "make install-dev" and EXCLUDED["make install-dev"] == INSTALLS
    run = commands[1:]
    # test_docs_examples.py excludes these lines because this test runs them: all of them, and only them.
    assert [command for _, command in run] == [c for c, reason in EXCLUDED.items() if reason == AIRFLOW_LOCAL]
    values = {"emulator": pubsub_emulator.host}
    for text in SUBSTITUTIONS:
        assert sum(text in command for _, command in run) == 1, f"{text!r} is not in the block once"
    run = [(number, substituted(command, values)) for number, command in run]

    env = clean_environment(tmp_path) | {"PULSECART_HOME": str(embedded_home)}
    pulsecart("pubsub", "setup", "--project", PROJECT, env=env | {"PUBSUB_EMULATOR_HOST": pubsub_emulator.host})
    publish_dead_letters(pubsub.connect(PROJECT), [(event(1), {}, "")])
    statuses, env_dump = tmp_path / "statuses", tmp_path / "environment"
    cwd = working_directory(tmp_path)
    result = subprocess.run([BASH, "-c", script(run, statuses, env_dump)], env=env, cwd=cwd,
                            capture_output=True, text=True, check=False, timeout=600)

    shown = f"{DOC} in {cwd}:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    assert statuses.exists(), shown
    exits = dict(line.split() for line in statuses.read_text().splitlines())
    for number, command in run:   # each line ran and exited 0
        assert exits.get(str(number)) == "0", f"{DOC}:{number} `{command}` exited {exits.get(str(number))}\n{shown}"
    assert result.returncode == 0, shown
    exported = dict(entry.split("=", 1) for entry in env_dump.read_text().split("\0") if entry)
    assert exported["AIRFLOW_CONN_PULSECART_DB"] == pulsecart("dev", "db", "url", env=env).stdout.strip()
    assert exported["AIRFLOW_CONN_PULSECART_DB"].endswith(f"?host={embedded_home / 'pgdata'}")
    assert Path(exported["AIRFLOW_VAR_PULSECART_CLI"]).resolve() == Path(PULSECART).resolve()
    airflow_home = Path(exported["AIRFLOW_HOME"])
    assert airflow_home.parent == tmp_path / "tmp"

    with sqlite3.connect(airflow_home / "airflow.db") as metadata:
        dag_runs = metadata.execute("SELECT dag_id, run_id, state, logical_date FROM dag_run ORDER BY id").fetchall()
    assert [(dag_id, state, logical[:10]) for dag_id, _, state, logical in dag_runs] == [
        (dag_id, "success", "2025-03-04") for dag_id in DAG_IDS], shown
    run_ids = {dag_id: run_id for dag_id, run_id, _, _ in dag_runs}

    with connect(exported["AIRFLOW_CONN_PULSECART_DB"]) as conn:
        ledger = conn.execute("SELECT job, target, run_date, status, trigger, airflow_run_id, rows_written > 0"
                              " FROM job_runs ORDER BY job, target").fetchall()
    aggregate, metrics, reconcile = (run_ids[dag_id] for dag_id in DAG_IDS)
    assert ledger == [   # the runs for logical date 2025-03-04 process 2025-03-03; one reconcile per topic
        ("aggregate", None, date(2025, 3, 3), "succeeded", "airflow", aggregate, True),
        ("metrics", None, date(2025, 3, 3), "succeeded", "airflow", metrics, True),
        ("reconcile", "pulsecart.commerce-events", None, "succeeded", "airflow", reconcile, True),   # the dead letter
        ("reconcile", "pulsecart.system-events", None, "succeeded", "airflow", reconcile, False),
        ("reconcile", "pulsecart.user-actions", None, "succeeded", "airflow", reconcile, False),
    ], shown
