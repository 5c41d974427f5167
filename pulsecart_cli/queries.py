"""Named SQL queries from ``sql/queries/*.sql``.

A file holds blocks that start with ``-- name: NAME``; ``query("FILE.NAME")`` returns the block.
Parameters are psycopg named placeholders (``%(day)s``); values are always bound, never formatted in.
"""

import re
from functools import cache
from importlib.resources import files
from typing import TypeVar

import psycopg

Row = TypeVar("Row")

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


def parse_named(text: str) -> dict[str, str]:
    """The ``-- name: NAME`` blocks of a SQL file."""
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def _load(filename: str) -> dict[str, str]:
    return parse_named(files("pulsecart_cli.sql.queries").joinpath(f"{filename}.sql").read_text())


def query(qualified_name: str) -> str:
    filename, _, name = qualified_name.partition(".")
    try:
        return _load(filename)[name]
    except (KeyError, FileNotFoundError) as exc:
        raise LookupError(f"no query named {qualified_name!r} in sql/queries") from exc


def one_row(cursor: psycopg.Cursor[Row]) -> Row:
    """The first row of a query that always returns one (an aggregate, ``INSERT ... RETURNING``)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row
