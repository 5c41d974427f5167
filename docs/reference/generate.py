"""Writes docs/reference/cli.md from every command's --help: `make docs`. tests/db/test_cli_docs.py fails when
the file differs from what this prints."""

import os
import sys
from pathlib import Path

from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from pulsecart_cli.cli import app

WIDTH = 100
TARGET = Path(__file__).with_name("cli.md")


def command_paths(command=None, path=("pulsecart",)):
    command = command or get_command(app)
    yield path
    if isinstance(command, TyperGroup):
        for name in command.list_commands(None):
            yield from command_paths(command.commands[name], (*path, name))


def reference() -> str:
    parts = ["# Command reference", "",
             "Generated from `--help` by `docs/reference/generate.py` (`make docs`); do not edit by hand.", ""]
    for path in command_paths():
        result = CliRunner().invoke(app, [*path[1:], "--help"], terminal_width=WIDTH,
                                    env={"COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"}, prog_name="pulsecart")
        if result.exit_code != 0:
            raise SystemExit(f"{' '.join(path)} --help failed: {result.output}")
        body = "\n".join(line.rstrip() for line in result.stdout.strip("\n").splitlines())
        parts += [f"## {' '.join(path)}", "", "```text", body, "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    os.environ.setdefault("COLUMNS", str(WIDTH))
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if TARGET.read_text() == reference() else 1)
    TARGET.write_text(reference())
