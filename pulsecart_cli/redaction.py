"""Passwords never reach the output.

``redact`` masks the password of a connection string by its structure (a URI's user info and
``?password=``, libpq's ``password=`` in key=value form), malformed strings included: the mask
covers at least what any reading of the string could take for the password. ``filtered_output``
then wraps stdout and stderr for a whole command and masks every password it was given (on the
command line, positional by mistake included, or in the environment) wherever one still appears:
in libpq's messages, Click's, tracebacks, JSON.
"""

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO
from urllib.parse import unquote

from pulsecart_cli.render import clean

MASK = "***"
# A shorter password cannot be told from ordinary text; ``redact`` still masks it in a URL.
MIN_FILTERED = 4
URL_ENV = "PULSECART_DATABASE_URL"
PASSWORD_ENV = "PGPASSWORD"  # noqa: S105 - the variable's name, not a password

_URI = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
_OPTION_PREFIX = re.compile(r"--[\w-]+=")
# libpq key=value: after '=' it skips blanks; a quoted value runs to its closing quote, an unquoted one
# to the next blank, both with backslash escapes. An unterminated quote runs to the end; a missing '='
# still leaves a password after the keyword.
_KEYWORD = re.compile(r"(?P<key>\w*password(?:\s*=\s*|\s+))"
                      r"(?P<value>'(?P<quoted>(?:\\.|[^'\\])*)(?:'|\\?\Z)|(?P<bare>(?:\\.|[^\s\\])+)\\?)",
                      re.IGNORECASE | re.DOTALL)
_QUERY_PARAM = re.compile(r"(?P<key>[?&][^=&]*=)(?P<value>[^&]*)")
# How libpq or a reader may cut a malformed password: each piece can turn up in a message on its own.
_PIECES = re.compile(r"[@/:?]")


def redact(text: str) -> str:
    """The connection string with every password replaced by ***."""
    return _redact(text)[0]


def passwords(text: str) -> set[str]:
    """Every string that a reading of ``text`` could take for a password, raw and decoded."""
    return _redact(text)[1]


def _redact(text: str) -> tuple[str, set[str]]:
    found: set[str] = set()
    scheme = _URI.match(text)
    if scheme:
        return _redact_uri(text, scheme.end(), found), found

    def keyword(match: re.Match[str]) -> str:
        value = match["value"]
        found.update({value, re.sub(r"\\(.)", r"\1", match["quoted"] or match["bare"] or "", flags=re.DOTALL)})
        quote = "'" if value.startswith("'") else ""
        return f"{match['key']}{quote}{MASK}{quote}"

    return _KEYWORD.sub(keyword, text), found - {""}


def _redact_uri(uri: str, head: int, found: set[str]) -> str:
    rest = uri[head:]

    def query_param(match: re.Match[str]) -> str:
        if "password" not in unquote(match["key"]).lower():
            return match[0]
        found.update({match["value"], unquote(match["value"])})
        return match["key"] + MASK

    query_at = rest.find("?")
    if query_at >= 0:
        rest = rest[:query_at] + _QUERY_PARAM.sub(query_param, rest[query_at:])
    # The user info ends at the last '@' (an unencoded '@' in a password is common); libpq stops at the first.
    at = rest.rfind("@")
    colon = rest.find(":", 0, at)
    if at >= 0 and colon >= 0:
        password = rest[colon + 1:at]
        for candidate in (password, unquote(password)):
            found.add(candidate)
            found.update(_PIECES.split(candidate))
        rest = f"{rest[:colon + 1]}{MASK}{rest[at:]}"
    found.discard("")
    return uri[:head] + rest


def _variants(secret: str) -> set[str]:
    """The secret as it may be printed: raw, inside JSON, inside a Python repr, with controls escaped."""
    return {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], clean(secret)}


def replacements(texts: Iterable[str], raw_passwords: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(what, by what) for every text that holds a password, longest first: the whole text by its
    redacted form, then each password of at least MIN_FILTERED characters by ***."""
    pairs: dict[str, str] = {}
    secrets = {p for p in raw_passwords if p}
    for text in texts:
        text = _OPTION_PREFIX.sub("", text, count=1)
        masked, found = _redact(text)
        if found:
            pairs[text] = masked
            secrets |= found
    for secret in secrets:
        for variant in _variants(secret):
            if len(variant) >= MIN_FILTERED:
                pairs.setdefault(variant, MASK)
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


class _Filtered:
    """A text stream that masks secrets in everything written to it."""

    def __init__(self, stream: TextIO, pairs: list[tuple[str, str]]):
        self._stream = stream
        self._pairs = pairs

    def write(self, text: str) -> int:
        for old, new in self._pairs:
            text = text.replace(old, new)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":  # writing bytes would go around the filter
            raise AttributeError(name)
        return getattr(self._stream, name)


@contextmanager
def filtered_output(argv: list[str]) -> Iterator[None]:
    """Mask, on stdout and stderr, every password found in ``argv`` or the environment."""
    pairs = replacements([*argv, os.environ.get(URL_ENV) or ""], [os.environ.get(PASSWORD_ENV) or ""])
    if not pairs:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Filtered(sys.stdout, pairs), _Filtered(sys.stderr, pairs)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
