"""The `--json` examples of docs/json.md against real output: for every `pulsecart … --json` line followed by a
`# {…}` comment, the command runs on a database with the examples' days in it, and the example and the
output must have the same keys and the same JSON types, at every level. `…` in an example stands for
any value (`{…}`, `"start": …`) or for more list items (`[…, …]`)."""

import json
import re
import shlex
from datetime import date
from pathlib import Path

import pytest

from pulsecart_cli import pubsub
from pulsecart_cli.seed import SeedSpec, seed_events
from tests.helpers import connect, event, publish_dead_letters, run_pulsecart

JSON_DOC = Path(__file__).resolve().parents[2] / "docs" / "json.md"
ANY = object()
EXAMPLE = re.compile(r"^pulsecart (?P<args>[^#\n]*--json[^#\n]*?)[ \t]*(?:#[^\n]*)?\n(?P<json>(?:# [^\n]*\n)+)",
                     re.MULTILINE)


def examples() -> list[tuple[list[str], str]]:
    found = []
    for match in EXAMPLE.finditer(JSON_DOC.read_text()):
        text = "".join(line[2:] for line in match["json"].splitlines(keepends=True))
        if text.lstrip().startswith("{"):
            found.append((shlex.split(match["args"]), text))
    return found


def parse_example(text: str):
    """The example as JSON, each `…` value as a placeholder and each `, …` in a list dropped."""
    text = re.sub(r",\s*…(?=\s*[\]}])", "", text)
    text = re.sub(r"(?<=[:\[,])\s*…|\{…\}", lambda _: ' "…"', text)
    return _placeholders(json.loads(text))


def _placeholders(value):
    if value == "…":
        return ANY
    if isinstance(value, dict):
        return {k: _placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v) for v in value]
    return value


def differences(example, real, where: str = "$") -> list[str]:
    """Where the example's keys or JSON types differ from the real output's."""
    if example is ANY:
        return []
    if isinstance(example, dict):
        if not isinstance(real, dict):
            return [f"{where}: an object in the docs, {type(real).__name__} in the output"]
        found = [f"{where}: keys only in the docs: {sorted(set(example) - set(real))}"] if set(example) - set(real) else []
        found += [f"{where}: keys only in the output: {sorted(set(real) - set(example))}"] if set(real) - set(example) else []
        return found + [d for key in set(example) & set(real) for d in differences(example[key], real[key], f"{where}.{key}")]
    if isinstance(example, list):
        if not isinstance(real, list):
            return [f"{where}: a list in the docs, {type(real).__name__} in the output"]
        if example and not real:
            return [f"{where}: the output's list is empty, so the docs' items cannot be checked"]
        return [d for item in example for d in differences(item, real[0], f"{where}[0]")]
    kinds = {bool: "boolean", int: "number", float: "number", str: "string", type(None): "null"}
    if kinds[type(example)] != kinds[type(real)]:
        return [f"{where}: {kinds[type(example)]} {example!r} in the docs, {kinds[type(real)]} {real!r} in the output"]
    return []


def test_the_comparison_can_fail():
    example = parse_example('{"a": 1, "b": [{"c": "x"}, …], "d": {…}, "e": …}')
    assert differences(example, {"a": 2, "b": [{"c": "y"}], "d": {"z": 1}, "e": [1]}) == []
    assert sorted(differences(example, {"a": "2", "b": [{"c": "y", "f": 1}], "d": 1, "e": None})) == [
        "$.a: number 1 in the docs, string '2' in the output", "$.b[0]: keys only in the output: ['f']"]


@pytest.fixture
def readme_database(db_url, gcp_project, pubsub_emulator):
    """The examples' days (2025-03-01 … 2025-03-08) aggregated and computed, one day of metrics failed, and
    dead letters reconciled (one quarantined); the environment the commands run with."""
    with connect(db_url) as conn:
        seed_events(conn, SeedSpec(date(2025, 3, 1), 8, 200, 1_000, 3))
    env = {"PULSECART_DATABASE_URL": db_url, "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
           "PULSECART_GCP_PROJECT": gcp_project}
    for args in (("aggregate", "--window", "2025-03-01..2025-03-03"), ("metrics", "--window", "2025-03-01..2025-03-08"),
                 ("pubsub", "setup")):
        assert run_pulsecart(*args, env=env).returncode == 0
    publish_dead_letters(pubsub.connect(gcp_project), [(event(1), {}, ""), (b"not json", {}, "")])
    return env


def test_every_json_example_in_the_readme_has_the_keys_and_types_of_the_real_output(readme_database):
    found = examples()
    assert {args[0] for args, _ in found} >= {"metrics", "aggregate", "status", "runs", "reconcile", "quarantine"}
    problems = []
    for args, text in found:
        if args[0] == "reconcile":
            args = [*args, "--pull-timeout", "2"]
        result = run_pulsecart(*args, env=readme_database)
        assert result.stdout.strip(), f"pulsecart {shlex.join(args)} printed nothing: {result.stderr}"
        problems += [f"pulsecart {shlex.join(args)}: {d}"
                     for d in differences(parse_example(text), json.loads(result.stdout))]
    assert problems == [], "\n".join(problems)


def everyday_commands() -> list[list[str]]:
    """The README's "Everyday commands" block, each line as argv after `pulsecart`."""
    text = (JSON_DOC.parents[1] / "README.md").read_text()
    block = text.split("## Everyday commands", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("pulsecart ")]


def test_the_readmes_everyday_commands_run(readme_database):
    """Each runs as typed on a database with the examples' days, but for the Pub/Sub project (the emulator's)
    and `--via airflow --run`, which needs Airflow (tests/airflow run it): never a usage error or a traceback,
    at most one Error: line, and an exit code the README documents for a healthy tool."""
    commands = everyday_commands()
    assert len(commands) == 8
    ran = 0
    for argv in commands:
        if "--via" in argv and "--run" in argv:
            continue
        if "--project" in argv:
            argv[argv.index("--project") + 1] = readme_database["PULSECART_GCP_PROJECT"]
            argv += ["--pull-timeout", "2"]
        result = run_pulsecart(*argv, env=readme_database, timeout=120)
        expected = {0, 5} if argv[:2] == ["status", "--check"] else {0}
        assert result.returncode in expected, f"pulsecart {shlex.join(argv)}: {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr and result.stderr.count("Error:") <= 1, result.stderr
        ran += 1
    assert ran == 7
