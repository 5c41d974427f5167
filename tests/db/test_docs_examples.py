"""Every shell example in README.md and docs/ runs (issue 26, point 5): each command of the `sh`/`bash`/
`shell`/`console` and `cron` code blocks, as typed but for the explicit substitutions below, on a real
database prepared with the days the examples use. Each must exit with the code its doc gives (0 unless
EXPECTED_EXIT quotes the doc saying otherwise) and print no traceback. An example that cannot run here is
named in EXCLUDED with the reason; a new example that is neither runnable nor excluded fails
`test_every_example_is_run_or_excluded_with_a_reason`, and so does a code block of a language not classified.

The examples of one doc run in the doc's order on one database of their own (the cron block on its own
database, prepared with the recent days its relative dates name): an example selected alone first runs
the examples before it in its doc. docs/reference/cli.md is --help, tested by test_cli_docs.py."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pulsecart_cli import pubsub
from pulsecart_cli.seed import SeedSpec, seed_events
from tests.db.test_cli_docs import DOCS, REPO
from tests.helpers import FAIL_ON_MARCH_3, connect, event, publish_dead_letters

SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
CRON = "cron"
FENCE = re.compile(r"^```(?P<lang>\S*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
TRAILING_COMMENT = re.compile(r"\s+#\s.*$")  # `cmd   # what it does`
STDERR_SHOWN = "# stderr: "
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
BASH = shutil.which("bash") or "/bin/bash"
BIN = Path(sys.executable).parent
VENV = Path(sys.prefix)

# --- what is not run, and why -------------------------------------------------------------------------------

RECURSES = "runs the whole test suite, this test included (CI runs it: .ci/run)"
INSTALLS = ("installs packages into the environment: the one running this test is what it makes, and "
            "`make test-db` installs no Airflow")
AIRFLOW_LOCAL = ("needs Airflow, which `make test-db` does not install: tests/airflow/test_docs_run_a_dag_locally.py "
                 "reads this block from this doc and runs these lines as typed (but for the emulator's address)")
AIRFLOW_DEPLOY = ("a live Airflow deployment (metadata database, api-server, dag-processor, scheduler): "
                  "tests/airflow/test_scheduler_backfill.py deploys one with these steps, typed there as argv "
                  "lists, not read from this doc")
AIRFLOW_SECRETS = ("Airflow settings for its components: tests/airflow/test_scheduler_connections.py runs a "
                   "scheduler with this secrets backend, configured there, not read from this doc")
AIRFLOW_RUN = ("`--via airflow --run` runs `airflow backfill create` on a live Airflow deployment: "
               "tests/airflow/test_scheduler_backfill.py runs `pulsecart … --via airflow --run` on one")

EXCLUDED = {
    "make test": RECURSES,
    "PULSECART_TEST_DATABASE_URL=postgresql://postgres@localhost:5432/postgres make test": RECURSES,
    "pulsecart aggregate --window 2025-03-04..2025-03-10 --via airflow --run": AIRFLOW_RUN,
    "pulsecart metrics --window 2025-03-03..2025-03-08 --via airflow --run --dry-run": AIRFLOW_RUN,
    "pulsecart metrics --window 2025-03-03..2025-03-08 --via airflow --run --max-active-runs 3": AIRFLOW_RUN,
    # operations.md, "Run a DAG locally"
    "make install-dev": INSTALLS,
    "export AIRFLOW_HOME=$(mktemp -d) AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags AIRFLOW__CORE__LOAD_EXAMPLES=False":
        AIRFLOW_LOCAL,
    "export AIRFLOW_CONN_PULSECART_DB=$(.venv/bin/pulsecart dev db url)": AIRFLOW_LOCAL,
    "export AIRFLOW_VAR_PULSECART_CLI=$PWD/.venv/bin/pulsecart": AIRFLOW_LOCAL,
    ".venv/bin/airflow db migrate && .venv/bin/airflow dags reserialize": AIRFLOW_LOCAL,
    ".venv/bin/airflow dags test pulsecart_nightly_aggregation 2025-03-04": AIRFLOW_LOCAL,
    ".venv/bin/airflow dags test pulsecart_daily_metrics 2025-03-04": AIRFLOW_LOCAL,
    "PUBSUB_EMULATOR_HOST=127.0.0.1:8085 AIRFLOW_VAR_PULSECART_GCP_PROJECT=demo "
    ".venv/bin/airflow dags test pulsecart_dead_letter_reconciliation 2025-03-04": AIRFLOW_LOCAL,
    # operations.md, "Deploy on Airflow" (its two `pulsecart db …` lines run)
    "pip install '/srv/pulsecart[airflow]'": INSTALLS,
    "export AIRFLOW__CORE__LOAD_EXAMPLES=False": AIRFLOW_DEPLOY,
    "export AIRFLOW_HOME=/srv/airflow AIRFLOW__CORE__DAGS_FOLDER=/srv/pulsecart/dags "
    "AIRFLOW__CORE__EXECUTOR=LocalExecutor": AIRFLOW_DEPLOY,
    "export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow:PASSWORD@db.internal/airflow":
        AIRFLOW_DEPLOY,
    "airflow db migrate": AIRFLOW_DEPLOY,
    "airflow connections add pulsecart_db --conn-uri 'postgresql://pulsecart:PASSWORD@db.internal/pulsecart'":
        AIRFLOW_DEPLOY,
    "airflow variables set pulsecart_cli /srv/pulsecart/.venv/bin/pulsecart": AIRFLOW_DEPLOY,
    "airflow variables set pulsecart_gcp_project pulsecart-prod": AIRFLOW_DEPLOY,
    "airflow connections add smtp_default --conn-uri "
    "'smtp://alerts%40pulsecart.io:PASSWORD@smtp.internal:587?disable_ssl=true&from_email=airflow%40pulsecart.io'":
        AIRFLOW_DEPLOY,
    "airflow variables set pulsecart_alert_emails 'engineering@pulsecart.io,oncall@pulsecart.io'": AIRFLOW_DEPLOY,
    "airflow api-server --port 8080 &": AIRFLOW_DEPLOY,
    "airflow dag-processor &": AIRFLOW_DEPLOY,
    "airflow scheduler &": AIRFLOW_DEPLOY,
    "airflow dags unpause pulsecart_nightly_aggregation": AIRFLOW_DEPLOY,
    "airflow dags unpause pulsecart_daily_metrics": AIRFLOW_DEPLOY,
    "airflow dags unpause pulsecart_dead_letter_reconciliation": AIRFLOW_DEPLOY,
    # operations.md, "Secrets backend"
    "export AIRFLOW__SECRETS__BACKEND=airflow.secrets.local_filesystem.LocalFilesystemBackend": AIRFLOW_SECRETS,
    "export AIRFLOW__SECRETS__BACKEND_KWARGS='{\"connections_file_path\": \"/srv/airflow/secrets/connections.json\", "
    "\"variables_file_path\": \"/srv/airflow/secrets/variables.json\"}'": AIRFLOW_SECRETS,
}

# --- the examples ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    doc: str        # relative to the repository
    line: int       # where the command starts
    command: str    # as typed (continuations joined)
    language: str
    env: tuple[tuple[str, str], ...] = field(default=())   # a crontab's settings, for its lines
    stderr: str | None = None   # what the doc shows it prints on stderr (`# stderr: …`)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def sequence(self) -> str:
        """The examples that share a database and run in order: a doc's, or its crontab's."""
        return f"{self.doc} {self.language}" if self.language == CRON else self.doc


def shell_lines(body: str, first_line: int) -> list[tuple[int, str, str | None]]:
    """A shell block's commands: comments (the docs show output as `# …`) and blank lines dropped,
    `\\` continuations joined, a console's `$ ` prompt taken off; with what a `# stderr: …` line under a
    command shows it prints on stderr."""
    found: list[tuple[int, str, str | None]] = []
    pending: tuple[int, str] | None = None
    for number, line in enumerate(body.splitlines(), first_line):
        if pending:
            start, text = pending
            line = text + line.strip()
        elif line.startswith(STDERR_SHOWN) and found:
            found[-1] = (*found[-1][:2], line.removeprefix(STDERR_SHOWN))
            continue
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        else:
            start = number
            line = line.removeprefix("$ ")
        if line.endswith("\\"):
            pending = (start, line[:-1].rstrip() + " ")
            continue
        pending = None
        found.append((start, TRAILING_COMMENT.sub("", line).strip(), None))
    assert pending is None, f"a continuation runs off the end of the block at line {first_line}"
    return found


def cron_lines(body: str, first_line: int) -> tuple[tuple[tuple[str, str], ...], list[tuple[int, str]]]:
    """A crontab: its NAME=value settings, and each entry's command (the five time fields taken off)."""
    settings, commands = [], []
    for number, line in enumerate(body.splitlines(), first_line):
        if not line.strip() or line.startswith("#"):
            continue
        if ASSIGNMENT.match(line):
            name, value = line.split("=", 1)
            settings.append((name, value))
        else:
            commands.append((number, line.split(None, 5)[5]))
    return tuple(settings), commands


def blocks() -> list[tuple[str, int, str, str]]:
    """(doc, first line of the body, language, body) of every fenced code block."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start("body")) + 1
            found.append((str(path.relative_to(REPO)), line, match["lang"], match["body"]))
    return found


def all_examples() -> list[Example]:
    found = []
    for doc, line, language, body in blocks():
        if language in SHELL_LANGUAGES:
            found += [Example(doc, n, command, language, stderr=err) for n, command, err in shell_lines(body, line)]
        elif language == CRON:
            settings, commands = cron_lines(body, line)
            found += [Example(doc, n, command, language, settings) for n, command in commands]
    return found


EXAMPLES = all_examples()
# What runs: `pulsecart …` (after any VAR=value) and `make demo`. Anything else must be in EXCLUDED: a new
# example of another kind fails the inventory test and is not run.
RUNNABLE = re.compile(r"(?:[A-Z_]+=\S+ )*(?:pulsecart |make demo$)")
RUN = [e for e in EXAMPLES if e.command not in EXCLUDED and RUNNABLE.match(e.command)]

# --- how they run ---------------------------------------------------------------------------------------------

# Text of an example -> what runs instead: the docs' production names become the test's. Each is used.
SUBSTITUTIONS = {
    # the crontab's database (its PULSECART_DATABASE_URL= setting), and the deploy steps' admin URL
    "postgresql://pulsecart@db.internal/pulsecart": "{database}",
    "'postgresql://pulsecart_admin@db.internal/pulsecart'": "{database}",
    # the GCP project and the Pub/Sub emulator: the test's emulator and a project of its own on it
    "--project my-gcp-project": "--project {project}",
    "--project pulsecart-prod": "--project {project}",
    "--project demo": "--project {project}",
    "PUBSUB_EMULATOR_HOST=127.0.0.1:8085": "PUBSUB_EMULATOR_HOST={emulator}",
    # an empty pull ends a topic's run after --pull-timeout (default 5 s): the emulator answers at once, so a
    # longer one is only waiting (3 topics x 5 s for `--topic all`)
    "--pull-timeout 10": "--pull-timeout 1",
    "reconcile --topic all": "reconcile --topic all --pull-timeout 1",
    "reconcile --topic commerce-events --json": "reconcile --topic commerce-events --json --pull-timeout 1",
    # the demo in a home of its own (the recipe wipes its pgdata) with the interpreter's environment, which is
    # installed already (-o: make does not reinstall it)
    "make demo": "make -o {venv}/.installed demo VENV={venv} DEMO_HOME={home}/demo",
}

# An exit code other than 0, with the doc's words that say so (checked to be in the example's doc). The
# prepared databases have problem days: the last days before today hold no runs.
EXPECTED_EXIT = {
    "pulsecart status --check --days 2": (5, "exit 5 with the fix command per problem day"),
    "pulsecart status --check --days 7 --json": (5, "(with `--check`: `ok` false and exit 5 when a day has a problem)"),
}

# Roles the examples grant to (`pulsecart db grant ROLE`): a production database has them; made when absent.
ROLES = ("pulsecart_jobs", "pulsecart")
EXAMPLE_DAYS = date(2025, 3, 1), 8   # 2025-03-01 … 2025-03-08, the days the examples name


def substituted(command: str, values: dict[str, str]) -> str:
    for text, replacement in SUBSTITUTIONS.items():
        command = command.replace(text, replacement.format(**values))
    return command


def pulsecart(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "pulsecart"), *args], env=env, capture_output=True, text=True,
                          check=False, timeout=120)


def clone(server_url: str, template: str) -> str:
    name = f"pulsecart_docs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name


class Sequences:
    """The examples' databases: one per sequence, cloned from the prepared one it needs, run in order."""

    def __init__(self, server_url: str, templates: dict[str, str], values: dict[str, str], env: dict[str, str]):
        self.server_url, self.templates, self.values, self.env = server_url, templates, values, env
        self.databases: dict[str, str] = {}
        self.ran: set[Example] = set()

    def run_in_order(self, example: Example) -> None:
        """Run the examples before this one in its sequence that have not run, then this one."""
        for earlier in [e for e in RUN if e.sequence == example.sequence]:
            if earlier not in self.ran:
                self.run(earlier)
            if earlier == example:
                return

    def database(self, example: Example) -> str:
        if example.sequence not in self.databases:
            template = self.templates[CRON if example.language == CRON else "examples"]
            self.databases[example.sequence] = clone(self.server_url, template)
            publish_some_dead_letters(self.values["project"])
        return make_conninfo(self.server_url, dbname=self.databases[example.sequence])

    def run(self, example: Example) -> None:
        self.ran.add(example)
        url = self.database(example)
        values = self.values | {"database": shlex.quote(url)}
        settings = {name: substituted(value, values | {"database": url}) for name, value in example.env}
        env = self.env | {"PULSECART_DATABASE_URL": url} | settings
        command = substituted(example.command, values)
        result = subprocess.run([BASH, "-c", command], env=env, cwd=REPO, capture_output=True, text=True,
                                check=False, timeout=300)
        shown = f"{example.id}: {command}\nexit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        expected = EXPECTED_EXIT.get(example.command, (0, ""))[0]
        assert result.returncode == expected, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
        if example.command.startswith("pulsecart "):
            # README: every failure but check-complete's 4 ends with one `Error:` line; a success prints none.
            errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
            assert len(errors) == (0 if expected in (0, 4) else 1), shown
        if example.language == CRON:
            # operations.md: cron mails whatever a command prints; on a healthy morning only the notes of a run
            # with nothing to do, and the morning check prints nothing.
            assert result.stdout == "", shown
            assert all(line.endswith("; nothing to do") for line in result.stderr.splitlines()), shown
            if "status --check" in example.command:
                assert result.stderr == "", shown
        if example.stderr is not None:
            assert result.stderr == example.stderr + "\n", shown
        if example.command == "make demo":
            assert "no gaps" in result.stdout, shown   # README: status shows the demo's week with "no gaps"

    def close(self) -> None:
        stopped = pulsecart("dev", "db", "stop", env=self.env | {"PULSECART_HOME": f"{self.values['home']}/demo"})
        assert stopped.returncode == 0, stopped.stderr   # README: `pulsecart dev db stop` stops the demo's server
        with psycopg.connect(self.server_url, autocommit=True) as admin:
            for name in self.databases.values():
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def publish_some_dead_letters(project: str) -> None:
    """A repairable event and one that is not JSON, on commerce-events' dead-letter topic."""
    publish_dead_letters(pubsub.connect(project), [(event(1), {}, ""), (b"not json", {}, "")])


def prepare_the_examples_days(url: str, env: dict[str, str]) -> None:
    """2025-03-01 … 2025-03-08 seeded; aggregated to 03-03, so 03-04 is missing; metrics run for all of them
    with 03-03 failed (json.md's `status --check` problem); one dead letter quarantined (id 1)."""
    with connect(url) as conn:
        seed_events(conn, SeedSpec(EXAMPLE_DAYS[0], EXAMPLE_DAYS[1], 200, 1_000, 3))
        conn.execute(FAIL_ON_MARCH_3)
    env = env | {"PULSECART_DATABASE_URL": url}
    assert pulsecart("aggregate", "--window", "2025-03-01..2025-03-03", env=env).returncode == 0
    assert pulsecart("metrics", "--window", "2025-03-01..2025-03-08", "--keep-going", env=env).returncode == 1
    with connect(url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER fail_on_march_3 ON daily_metrics; DROP FUNCTION fail_on_march_3()")
    publish_some_dead_letters(env["PULSECART_GCP_PROJECT"])
    assert pulsecart("reconcile", "--topic", "commerce-events", "--pull-timeout", "1", env=env).returncode == 0


def prepare_the_recent_days(url: str, env: dict[str, str]) -> None:
    """What the crontab finds on a morning: events up to now (past yesterday's end, so yesterday is complete),
    and both jobs run every day up to the day before yesterday."""
    env = env | {"PULSECART_DATABASE_URL": url}
    for args in (["seed", "--start", "8 days ago", "--days", "9", "--users", "200", "--events-per-day", "1000"],
                 ["aggregate", "--window", "8 days ago..2 days ago"], ["metrics", "--window", "8 days ago..2 days ago"]):
        result = pulsecart(*args, env=env)
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def sequences(server_url, template_db, pubsub_emulator, tmp_path_factory):
    home = tmp_path_factory.mktemp("docs-examples")
    project = f"docs-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CTX_", "PULSECART_"))} | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home),   # --install-completion
        "PULSECART_HOME": str(home / "pulsecart"), "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "PULSECART_GCP_PROJECT": project, "SHELL": "/bin/bash"}
    assert (BIN / "pulsecart").exists(), "the examples run the pulsecart next to this Python"
    with psycopg.connect(server_url, autocommit=True) as admin:
        made = [role for role in ROLES
                if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()]
        for role in made:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    assert pulsecart("pubsub", "setup", env=env).returncode == 0
    templates = {"examples": clone(server_url, template_db), CRON: clone(server_url, template_db)}
    prepare_the_examples_days(make_conninfo(server_url, dbname=templates["examples"]), env)
    prepare_the_recent_days(make_conninfo(server_url, dbname=templates[CRON]), env)
    values = {"project": project, "emulator": pubsub_emulator.host, "venv": str(VENV), "home": str(home)}
    running = Sequences(server_url, templates, values, env)
    yield running
    running.close()
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in templates.values():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for role in made:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# --- the tests ------------------------------------------------------------------------------------------------


def test_every_example_is_run_or_excluded_with_a_reason():
    languages = {language for _, _, language, _ in blocks()}
    assert languages <= SHELL_LANGUAGES | {CRON}, f"a code block of a language not classified: {languages}"
    unclassified = [e.id for e in EXAMPLES if e not in RUN and e.command not in EXCLUDED]
    assert unclassified == [], "run them (add what they need) or put them in EXCLUDED with the reason"
    commands = [e.command for e in EXAMPLES]
    assert [c for c in EXCLUDED if c not in commands] == [], "EXCLUDED names examples no doc has any more"
    used = [text for text in SUBSTITUTIONS if any(text in " ".join([e.command, *dict(e.env).values()]) for e in RUN)]
    assert used == list(SUBSTITUTIONS), "a substitution no example uses"
    for command, (_, words) in EXPECTED_EXIT.items():
        assert any(e.command == command and words in (REPO / e.doc).read_text() for e in RUN), command
    assert len(RUN) > 35, "the examples are not found any more"   # 41 of 72 when this test was written


@pytest.mark.parametrize("example", RUN, ids=lambda e: e.id)
def test_the_example_runs(example, sequences):
    sequences.run_in_order(example)
