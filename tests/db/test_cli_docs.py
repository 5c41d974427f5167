"""The CLI documents itself (in the spirit of sqlite-utils' tests/test_docs.py): every command and group
has help with verbatim examples, every example in --help and every `pulsecart …` line in the code blocks
of README.md and docs/ parses, every option that reads an environment variable says so in --help, and
docs/reference/cli.md is what docs/reference/generate.py makes of --help now."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from pulsecart_cli.cli import app
from pulsecart_cli.dates import parse_day, parse_window
from pulsecart_cli.registry import DAILY_JOBS

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
# What a reader reads: the README and the docs (the generated CLI reference repeats --help: checked apart).
DOCS = [README, *sorted(p for p in (REPO / "docs").rglob("*.md") if p.name != "cli.md")]
ROOT = get_command(app)
ENV_VARS = {"--database-url": ["PULSECART_DATABASE_URL"], "--home": ["PULSECART_HOME"],
            "--project": ["PULSECART_GCP_PROJECT", "GOOGLE_CLOUD_PROJECT"]}
# Lines with a typed `pulsecart` command: after a shell word boundary, `$(`, or a path to the executable.
INVOCATION = re.compile(r"(?:^|(?<=[\s(]))(?:\S*/)?pulsecart\s+(?P<args>[^|>;)#\n]*)")


def walk(command=ROOT, path=("pulsecart",)):
    yield path, command
    if isinstance(command, TyperGroup):
        for name in command.list_commands(None):
            yield from walk(command.commands[name], (*path, name))


COMMANDS = {" ".join(path): command for path, command in walk()}


def help_text(path: str, width: int = 60) -> str:
    result = CliRunner().invoke(app, [*path.split()[1:], "--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.stdout


def examples(text: str) -> list[str]:
    """The lines of the verbatim `Examples:` block of a help text."""
    found = re.search(r"\n *Examples:\n", text)
    assert found, "no Examples: block"
    block = []
    for line in text[found.end():].splitlines():
        if not line.strip():
            break
        block.append(line.strip())
    return block


# Eager options whose callbacks act (install into ~/.bashrc) rather than print: checked by name only.
ACTING = {"--install-completion", "--show-completion"}


def parse(argv: list[str]) -> None:
    """Run argv through the CLI's parser, down to the command, with every value converted and checked
    (Enum choices, ranges), and the dates and windows parsed as the commands parse them. Invokes nothing."""
    if argv and argv[0] in ACTING:
        assert argv[1:] in ([], ["bash"], ["zsh"], ["fish"], ["powershell"]), argv
        assert argv[0] in help_text("pulsecart")
        return
    command, name, args, parent = ROOT, "pulsecart", list(argv), None
    while True:
        try:
            ctx = command.make_context(name, args, parent=parent)
        except typer.Exit as done:  # --help, --version
            assert done.exit_code == 0
            return
        if not isinstance(command, TyperGroup):
            break
        rest = [*ctx._protected_args, *ctx.args]
        assert rest, f"{' '.join(argv)}: a group, no command"
        name, command, args = command.resolve_command(ctx, rest)
        assert command is not None, f"no command {name}"
        parent = ctx
    for key in ("date_text", "start", "end"):
        if isinstance(ctx.params.get(key), str):
            parse_day(ctx.params[key])
    if ctx.params.get("window_text"):
        parse_window(ctx.params["window_text"])


def invocations(text: str) -> list[list[str]]:
    """Every `pulsecart …` command in a text, as argv after `pulsecart`."""
    found = []
    for match in INVOCATION.finditer(text):
        args = shlex.split(match["args"], comments=True)
        found.append([a for a in args if a != "&&"])
    return found


def docs_text() -> str:
    return "\n".join(path.read_text() for path in DOCS)


def readme_code_lines() -> list[str]:
    lines, inside = [], False
    for line in docs_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            lines.append(line)
    text = "\n".join(lines).replace("\\\n", " ")  # shell line continuations
    return [line for line in text.splitlines() if INVOCATION.search(line)]


def test_the_walk_finds_every_command_and_group():
    assert {"pulsecart aggregate", "pulsecart db", "pulsecart dev", "pulsecart dev db", "pulsecart dev db url",
            "pulsecart pubsub", "pulsecart quarantine", "pulsecart quarantine show"} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_and_group_has_help_with_verbatim_examples_of_itself(path):
    command = COMMANDS[path]
    docstring = command.help or ""
    text = help_text(path, width=40)  # narrow: prose wraps, examples must not
    lines = examples(text)
    assert lines, text
    parts = path.split()[1:]
    own = [line for line in lines for argv in invocations(line) if argv[:len(parts)] == parts]
    assert own, f"{path}: no example of itself in {lines}"
    assert len(docstring.split("\n\n")[0]) > 10
    for line in lines:
        assert line in [raw.strip() for raw in docstring.splitlines()], f"{line!r} is not verbatim from the docstring"
        assert invocations(line), f"{line!r} runs no pulsecart command"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_example_in_help_parses(path):
    for line in examples(help_text(path)):
        for argv in invocations(line):
            parse(argv)


README_LINES = readme_code_lines()


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_the_docs_mention_every_command(path):
    assert path in docs_text()


def test_the_readme_has_commands_to_check():
    assert len(README_LINES) > 20
    assert any("--via airflow" in line for line in README_LINES)


@pytest.mark.parametrize("line", README_LINES)
def test_every_pulsecart_line_in_the_readme_parses(line):
    for argv in invocations(line):
        parse(argv)


@pytest.mark.parametrize("argv", [
    ["aggregate", "--date", "2025-13-01"],
    ["aggregate", "--window", "2025-03-02..2025-03-01"],
    ["runs", "--job", "aggregat"],
    ["aggregate", "--via", "aws"],
    ["status", "--days", "0"],
    ["dev", "db", "launch"],
    ["dev", "db"],
])
def test_the_parser_check_can_fail(argv):
    with pytest.raises(Exception):  # noqa: B017 - a usage error of any kind
        parse(argv)


def option_env_vars():
    for path, command in COMMANDS.items():
        for param in command.params:
            if param.param_type_name == "option":
                yield path, param


def test_the_options_that_read_the_environment_declare_it_and_help_shows_it():
    checked = 0
    for path, param in option_env_vars():
        for flag, names in ENV_VARS.items():
            if flag in param.opts:
                assert param.envvar == (names[0] if len(names) == 1 else names), f"{path} {flag}"
        if param.envvar:
            names = [param.envvar] if isinstance(param.envvar, str) else param.envvar
            shown = " ".join(help_text(path, width=200).split())
            assert f"[env var: {', '.join(names)}]" in shown, f"{path} {param.opts}"
            checked += 1
    assert checked >= 15


def test_an_option_reads_its_environment_variable(cli, db_url, monkeypatch):
    monkeypatch.setenv("PULSECART_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/x")
    assert cli("runs", "--database-url", db_url, "--json").exit_code == 0
    refused = cli("runs", "--json")
    assert refused.exit_code == 1 and "127.0.0.1" in refused.stderr


def test_shell_completion_completes_commands_and_option_values():
    def complete(words: str) -> str:
        env = os.environ | {"_PULSECART_COMPLETE": "complete_bash", "COMP_WORDS": words,
                            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        result = subprocess.run([sys.executable, "-m", "pulsecart_cli"], env=env, capture_output=True, text=True,
                                check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert complete("pulsecart aggr").split() == ["aggregate"]
    assert set(complete("pulsecart runs --job ").split()) == {*DAILY_JOBS, "reconcile"}
    assert "--via" in complete("pulsecart metrics --v").split()
    assert "--install-completion" in help_text("pulsecart")


def test_the_docs_show_what_via_airflow_prints(monkeypatch):
    """A docs line `pulsecart … --via airflow` followed by `# airflow backfill create …` shows its real output."""
    monkeypatch.setenv("PULSECART_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/unused")
    text = docs_text()
    pairs = re.findall(r"^pulsecart (.*--via airflow[^#\n]*)\n# (airflow backfill create .*)$", text, re.MULTILINE)
    assert len(pairs) >= 2
    for args, shown in pairs:
        result = CliRunner().invoke(app, shlex.split(args))
        assert result.exit_code == 0, result.output
        assert result.stdout == shown + "\n"


def test_the_cli_reference_is_what_help_says_now():
    """docs/reference/cli.md is generated from --help: a changed option or help text without `make docs`
    fails here."""
    generated = subprocess.run([sys.executable, str(REPO / "docs" / "reference" / "generate.py"), "--check"],
                               cwd=REPO, capture_output=True, text=True, check=False, env=os.environ | {"COLUMNS": "180"})
    assert generated.returncode == 0, "docs/reference/cli.md is stale: run make docs" + generated.stderr


def test_the_readme_is_short_and_links_every_doc():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    for path in [*DOCS[1:], REPO / "docs" / "reference" / "cli.md", REPO / "bench" / "RESULTS.md"]:
        assert f"]({path.relative_to(REPO)}" in text, f"README.md does not link {path.relative_to(REPO)}"


def test_every_relative_link_in_the_docs_reaches_a_file_and_heading():
    broken = []
    for doc in [*DOCS, REPO / "bench" / "RESULTS.md", REPO / "bench" / "NOTES.md"]:
        for target in re.findall(r"\]\(([^)#:]*)(#[^)]*)?\)", doc.read_text()):
            file, anchor = target
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(REPO)}: {file}")
            elif anchor and anchor[1:] not in {heading_anchor(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.MULTILINE)}:
                broken.append(f"{doc.relative_to(REPO)}: {file}{anchor}")
    assert not broken


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
