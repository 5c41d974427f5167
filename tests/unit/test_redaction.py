"""Redaction by example (the properties are in test_properties.py): what is masked, what stays."""

import sys

import pytest

from pulsecart_cli.redaction import MASK, filtered_output, passwords, redact, replacements


@pytest.mark.parametrize(("url", "redacted"), [
    ("postgresql://alice:s3cret@db:5432/app", f"postgresql://alice:{MASK}@db:5432/app"),
    ("postgresql://alice:p%40ss@db/app", f"postgresql://alice:{MASK}@db/app"),
    ("postgresql://alice:p@ss@db/app", f"postgresql://alice:{MASK}@db/app"),
    ("postgresql://alice@db/app?sslmode=require&password=s3cret", f"postgresql://alice@db/app?sslmode=require&password={MASK}"),
    ("host=db password=s3cret dbname=app", f"host=db password={MASK} dbname=app"),
    ("host=db password='a b\\' c' dbname=app", f"host=db password='{MASK}' dbname=app"),
    ("postgresql://alice@db/app", "postgresql://alice@db/app"),
    ("host=db dbname=app", "host=db dbname=app"),
])
def test_redact(url, redacted):
    assert redact(url) == redacted


def test_passwords_are_raw_and_decoded():
    assert {"p%40ss", "p@ss"} <= passwords("postgresql://alice:p%40ss@db/app")
    assert passwords("postgresql://alice@db/app") == set()
    assert passwords("host=db password='a b\\' c'") >= {"a b' c"}


def test_replacements_put_the_whole_url_first_then_each_password_form():
    pairs = replacements(["postgresql://alice:s3cret@db/app", "--json"], ["pg-env-pass"])
    assert pairs[0] == ("postgresql://alice:s3cret@db/app", f"postgresql://alice:{MASK}@db/app")
    assert ("s3cret", MASK) in pairs and ("pg-env-pass", MASK) in pairs
    assert [len(old) for old, _ in pairs] == sorted((len(old) for old, _ in pairs), reverse=True)
    assert not any(old == "--json" for old, _ in pairs)


def test_an_option_with_equals_is_redacted_without_its_name():
    assert replacements(["--database-url=postgresql://u:s3cret@h/db"])[0] == (
        "postgresql://u:s3cret@h/db", f"postgresql://u:{MASK}@h/db")


def test_a_password_shorter_than_four_characters_is_masked_only_inside_its_url():
    assert replacements(["postgresql://u:abc@h/db"]) == [("postgresql://u:abc@h/db", f"postgresql://u:{MASK}@h/db")]


def test_filtered_output_masks_stdout_and_stderr(monkeypatch, capsys):
    monkeypatch.setenv("PULSECART_DATABASE_URL", "postgresql://u:env-secret@h/db")
    monkeypatch.setenv("PGPASSWORD", "pgpass-secret")
    with filtered_output(["--database-url", "host=h password=argv-secret"]):
        print("env-secret argv-secret pgpass-secret")
        print("connecting to postgresql://u:env-secret@h/db", file=sys.stderr)
    out, err = capsys.readouterr()
    assert out == f"{MASK} {MASK} {MASK}\n"
    assert err == f"connecting to postgresql://u:{MASK}@h/db\n"


def test_filtered_output_leaves_the_streams_alone_without_passwords(monkeypatch):
    monkeypatch.delenv("PULSECART_DATABASE_URL", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    before = sys.stdout, sys.stderr
    with filtered_output(["status", "--json"]):
        assert (sys.stdout, sys.stderr) == before
