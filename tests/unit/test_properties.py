"""Property tests (Hypothesis): redaction never lets a password through, and date, window and
duration parsing either give a value in range or raise the error that becomes exit 2."""

import string
from datetime import date, timedelta
from urllib.parse import quote

from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from pulsecart_cli.dates import FIRST_DAY, LAST_DAY, MAX_DURATION, parse_day, parse_duration, parse_window
from pulsecart_cli.errors import UsageError
from pulsecart_cli.redaction import MASK, MIN_FILTERED, passwords, redact, replacements

settings.register_profile("pulsecart", max_examples=200, deadline=None)
settings.load_profile("pulsecart")

passwords_st = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1)
users = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=12)


def libpq_quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def filtered(text: str, url: str) -> str:
    for old, new in replacements([url]):
        text = text.replace(old, new)
    return text


@given(users, passwords_st)
def test_a_percent_encoded_uri_password_is_masked_exactly(user, password):
    url = f"postgresql://{user}:{quote(password, safe='')}@db.internal:5432/pulsecart?sslmode=require"
    assert redact(url) == f"postgresql://{user}:{MASK}@db.internal:5432/pulsecart?sslmode=require"
    assert password in passwords(url)


@given(users, passwords_st.filter(lambda p: "?" not in p))
def test_an_unencoded_uri_password_is_masked_exactly(user, password):
    url = f"postgresql://{user}:{password}@db.internal:5432/pulsecart"
    assert redact(url) == f"postgresql://{user}:{MASK}@db.internal:5432/pulsecart"


@given(passwords_st)
def test_a_query_password_is_masked_exactly(password):
    url = f"postgresql://alice@db.internal/pulsecart?sslmode=require&password={quote(password, safe='')}"
    assert redact(url) == f"postgresql://alice@db.internal/pulsecart?sslmode=require&password={MASK}"
    assert password in passwords(url)


@given(passwords_st)
def test_a_key_value_password_is_masked_exactly(password):
    url = f"host=db.internal password={libpq_quoted(password)} dbname=pulsecart"
    assert conninfo_to_dict(url)["password"] == password  # what libpq reads
    assert redact(url) == f"host=db.internal password='{MASK}' dbname=pulsecart"
    assert password in passwords(url)


@given(passwords_st.filter(lambda p: "'" not in p and "\\" not in p))
def test_a_malformed_key_value_password_is_masked_to_the_end(password):
    url = f"host=db.internal password='{password}"
    assert redact(url) == f"host=db.internal password='{MASK}'"


@given(st.sampled_from(["uri", "query", "key=value"]), passwords_st.filter(lambda p: len(p) >= MIN_FILTERED))
def test_the_output_filter_masks_a_password_wherever_it_is_quoted(form, password):
    url = {"uri": f"postgresql://u:{quote(password, safe='')}@h/db",
           "query": f"postgresql://u@h/db?password={quote(password, safe='')}",
           "key=value": f"host=h password={libpq_quoted(password)}"}[form]
    message = f"Error: {url!r} failed: libpq said {password!r} / {password} / {url}"
    assert password not in filtered(message, url)


# --- dates, windows, durations ---------------------------------------------------------------------------------

day_texts = st.one_of(st.text(max_size=12), st.dates().map(date.isoformat),
                      st.sampled_from(["today", "yesterday", " Today ", "0001-01-01", "9999-12-31", "2025-02-29"]))


@given(day_texts)
def test_a_day_parses_in_range_or_is_a_usage_error(text):
    try:
        day = parse_day(text)
    except UsageError as exc:
        assert exc.exit_code == 2 and "--date" in exc.message
        return
    assert FIRST_DAY <= day <= LAST_DAY


def shifted(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


# Windows up to ~3 years either way from any day: two arbitrary dates are millennia apart, and
# listing millions of days made this one test take minutes.
windows = st.tuples(st.dates(), st.integers(-1100, 1100)).map(lambda t: (t[0], shifted(*t)))


@given(windows)
@example((FIRST_DAY - timedelta(days=1), FIRST_DAY))
@example((LAST_DAY, LAST_DAY + timedelta(days=1)))
@example((FIRST_DAY, FIRST_DAY))
def test_a_window_is_every_day_in_order_or_a_usage_error(window):
    start, end = window
    try:
        days = parse_window(f"{start}..{end}")
    except UsageError as exc:
        assert exc.exit_code == 2
        assert end < start or not (FIRST_DAY <= start <= LAST_DAY and FIRST_DAY <= end <= LAST_DAY)
        return
    assert days[0] == start and days[-1] == end and len(days) == (end - start).days + 1


@given(st.integers(0, 10**30), st.integers(0, 10**30), st.integers(0, 10**30),
       st.sampled_from(["{h}h{m}m{s}s", "{h}h", "{m}m", "{s}s", "{h}h {m}m"]))
def test_a_duration_is_exact_in_range_or_a_usage_error(h, m, s, form):
    text = form.format(h=h, m=m, s=s)
    expected = sum(int(n) * unit for n, unit in ((h, 3600), (m, 60), (s, 1)) if "{" + "hms"[[3600, 60, 1].index(unit)]
                   + "}" in form)
    try:
        value = parse_duration(text)
    except UsageError as exc:
        assert exc.exit_code == 2 and "--grace" in exc.message
        assert expected > MAX_DURATION.total_seconds()
        return
    assert value == timedelta(seconds=expected) <= MAX_DURATION


@given(st.text(max_size=20))
def test_any_duration_text_parses_in_range_or_is_a_usage_error(text):
    try:
        value = parse_duration(text)
    except UsageError:
        return
    assert timedelta(0) <= value <= MAX_DURATION
