"""No content of an event can fail a day: whatever `payload.total` holds (every Unicode category, digits of
other scripts, signs, exponents, very long strings), the day's metrics succeed, and a total that is not a
valid number (one definition: ASCII digits, order_total() in migration 0004) is counted in
invalid_order_totals. Against a real database in UTF-8 and in SQL_ASCII."""

import json
import re
import uuid
from datetime import date
from decimal import Decimal, localcontext

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

from pulsecart_cli import database, migrations
from pulsecart_cli.jobs import metrics_day
from tests.helpers import connect

D = date(2025, 3, 3)
VALID = re.compile(r"[ \t\n\r]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\n\r]*", re.ASCII)
UNICODE_SPACES = "\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u205f\u3000\xa0"

# U+0000 cannot be stored in jsonb: left out.
ANY_CHARACTER = st.characters(codec="utf-8", exclude_characters="\x00",
                              categories=["Zs", "Zl", "Zp", "Cc", "Cf", "Nd", "No", "Nl", "Pd", "Po", "Sm", "Sc",
                                          "Lu", "Ll", "Lo", "Mn", "So"])
NOISE = st.text(alphabet=st.sampled_from(" \t\n\r\x0b\x0c" + UNICODE_SPACES + "٣۴߅०৬+-eE._,"), max_size=3)
NUMBER = st.from_regex(r"[+-]?([0-9]{1,25}(\.[0-9]{0,8})?|\.[0-9]{1,8})([eE][+-]?[0-9]{1,3})?", fullmatch=True)
TOTAL = st.one_of(
    st.text(ANY_CHARACTER, max_size=40),
    st.builds(lambda before, number, after: before + number + after, NOISE, NUMBER, NOISE),
    st.builds(lambda digit, n: digit * n, st.sampled_from("9٣"), st.integers(1, 200_000)),
)


def expected(totals: list[str]) -> tuple[int, Decimal]:
    """(invalid totals, revenue) by the definition, in exact arithmetic."""
    invalid, revenue = 0, Decimal(0)
    with localcontext() as ctx:
        ctx.prec, ctx.Emax, ctx.Emin = 400_000, 999_999, -999_999
        for text in totals:
            value = Decimal(text.strip(" \t\n\r")) if VALID.fullmatch(text) else None
            # what numeric holds: less than 1e131053 in size (numeric_or_null), at most 16,383 decimals
            if value is None or abs(value) >= Decimal("1e131053") or (value != 0 and value.as_tuple().exponent < -16383):
                invalid += 1
            else:
                revenue += value
    return invalid, revenue


@pytest.fixture(scope="module", params=["UTF8", "SQL_ASCII"])
def encoded_db(request, server_url):
    name = f"pulsecart_totals_{request.param.lower()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING '{request.param}'"
                      " LC_COLLATE 'C' LC_CTYPE 'C'")
    url = make_conninfo(server_url, dbname=name, client_encoding="UTF8")
    with database.connection(url) as conn:
        migrations.migrate(conn)
    yield url
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.data_too_large])
@given(totals=st.lists(TOTAL, min_size=1, max_size=25))
@example(totals=["\u2003" + "12", "12\u3000", "\u00a012", "١٢", "Infinity", "-inf", "NaN", "1_000", "12", " 7.5 ",
                 "1e3", "1e400000", "0." + "0" * 17_000 + "1", "\u2028", "+.5", "5.", "--1", "\x1f"])
def test_no_total_fails_the_day_and_every_rejected_one_is_counted(encoded_db, totals):
    with connect(encoded_db, autocommit=True) as conn:
        conn.execute("DELETE FROM events")
        with conn.cursor() as cur:
            for text in totals:
                cur.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\", payload)"
                            " VALUES (%s, 'u', 'order.placed', '2025-03-03T12:00Z', %s::jsonb)",
                            (uuid.uuid4(), json.dumps({"total": text}, ensure_ascii=False)))
        with conn.transaction():
            outcome = metrics_day(conn, D)
    invalid, revenue = expected(totals)
    assert outcome.details["orders_placed"] == len(totals)
    assert outcome.details["invalid_order_totals"] == invalid
    assert Decimal(outcome.details["revenue"]) == revenue
