"""Complete means complete: a day with a fraction of its usual events waits (check-complete exits 4, the
sensor pokes again), an operator can accept one on purpose (recorded in the ledger, honoured later), and no
history, one week, zero-event days or huge days never crash the check."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulsecart_cli.seed import SeedSpec, seed_events
from tests.helpers import connect

TUESDAY = date(2025, 3, 4)


def weeks_then_a_thin_tuesday(conn, kept_share: float) -> None:
    """Four weeks and a day of 1,000 events a day, aggregated up to the Monday; the Tuesday keeps only the
    first ``kept_share`` of its day (a producer down since then), and an event past its end."""
    seed_events(conn, SeedSpec(date(2025, 2, 1), 33, 200, 1_000, 3))
    conn.execute("DELETE FROM events WHERE \"timestamp\" >= %s AND \"timestamp\" < %s",
                  (datetime(2025, 3, 4, tzinfo=UTC) + timedelta(days=kept_share), datetime(2025, 3, 5, tzinfo=UTC)))


def tuesday_events(conn) -> int:
    return conn.execute("SELECT count(*) FROM events WHERE \"timestamp\" >= '2025-03-04T00:00Z'"
                        " AND \"timestamp\" < '2025-03-05T00:00Z'").fetchone()[0]


def test_a_thin_day_waits_then_passes_once_its_events_arrive(cli, conn, db_url):
    weeks_then_a_thin_tuesday(conn, kept_share=0.22)
    assert cli("aggregate", "--window", "2025-02-01..2025-03-03").exit_code == 0
    left = tuesday_events(conn)
    assert 150 < left < 300
    waiting = cli("check-complete", "--date", str(TUESDAY))
    assert waiting.exit_code == 4
    assert waiting.stdout.strip() == (
        f"2025-03-04 has {left / 1000:.0%} of its usual events (median of 4 Tuesdays: 1,000): waiting for the rest; "
        "to accept it as it is: pulsecart check-complete --date 2025-03-04 --min-share 0")
    assert cli("check-complete", "--date", str(TUESDAY), "--min-share", "0.1").exit_code == 0   # a lower bar

    seed_events(conn, SeedSpec(TUESDAY, 1, 200, 1_000, 4))           # the producer catches up
    done = cli("check-complete", "--date", str(TUESDAY))
    assert done.exit_code == 0
    assert f"{left + 1000:,} events, {(left + 1000) / 1000:.0%} of its usual (median of 4 Tuesdays: 1,000)" in done.stdout


def test_a_holiday_accepted_by_hand_is_recorded_and_honoured(cli, conn):
    weeks_then_a_thin_tuesday(conn, kept_share=0.1)
    assert cli("aggregate", "--window", "2025-02-01..2025-03-03").exit_code == 0
    assert cli("check-complete", "--date", str(TUESDAY)).exit_code == 4
    accepted = cli("check-complete", "--date", str(TUESDAY), "--min-share", "0")
    assert accepted.exit_code == 0 and "accepted as it is on " in accepted.stdout
    assert cli("check-complete", "--date", str(TUESDAY)).exit_code == 0       # the sensor's next poke passes
    row = conn.execute("SELECT job, run_date, target, status, rows_written, details FROM job_runs"
                       " WHERE job = 'check-complete'").fetchall()
    left = tuesday_events(conn)
    assert row == [("check-complete", TUESDAY, "accepted", "succeeded", left, {"events": left, "usual": 1000, "weeks": 4})]


def test_with_fewer_than_two_weeks_of_counts_the_volume_check_is_skipped_and_says_so(cli, conn):
    seed_events(conn, SeedSpec(date(2025, 2, 24), 10, 50, 100, 3))
    assert cli("aggregate", "--window", "2025-02-24..2025-03-03").exit_code == 0
    conn.execute("DELETE FROM events WHERE \"timestamp\" >= '2025-03-04T01:00Z' AND \"timestamp\" < '2025-03-05'")
    result = cli("check-complete", "--date", str(TUESDAY))
    assert result.exit_code == 0
    assert result.stdout.strip().endswith("volume check skipped: 1 earlier Tuesdays with counts (2 needed)")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=st.lists(st.one_of(st.none(), st.integers(0, 2**62)), min_size=0, max_size=4),
       today=st.integers(0, 2**40), min_share=st.floats(0, 1))
def test_no_history_zero_or_huge_days_never_crash_the_check(db_url, counts, today, min_share):
    """Recorded counts of the four Tuesdays before (None: not aggregated), today's volume and the bar, at
    random: the check always answers 0 or 4."""
    from pulsecart_cli.dates import day_bounds
    from pulsecart_cli.status import completeness

    with connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM aggregated_days")
        conn.execute("DELETE FROM events")
        for weeks_back, count in enumerate(counts, start=1):
            if count is not None:
                conn.execute("INSERT INTO aggregated_days (day, counts_version, events) VALUES (%s, 1, %s)",
                             (TUESDAY - timedelta(weeks=weeks_back), count))
        conn.execute("INSERT INTO events (event_id, user_id, event_type, \"timestamp\")"
                     " SELECT gen_random_uuid(), 'u', 'product.viewed', %s FROM generate_series(1, %s)",
                     (day_bounds(TUESDAY)[0], today % 50))
        result = completeness(conn, TUESDAY, timedelta(minutes=30), min_share)
    assert result.events == today % 50
    assert result.usual is None or result.usual >= 0
    assert result.complete in (True, False)


def status_json(cli, *args):
    import json
    result = cli("status", "--end", "2025-03-05", "--days", "2", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def test_a_thin_day_that_ran_is_suspect_until_a_rerun_after_its_late_events(cli, conn):
    weeks_then_a_thin_tuesday(conn, kept_share=0.5)
    assert cli("aggregate", "--window", "2025-02-01..2025-03-05").exit_code == 0
    assert cli("metrics", "--window", "2025-02-01..2025-03-05").exit_code == 0
    left = tuesday_events(conn)
    _, shown = status_json(cli)
    tuesday = shown["jobs"]["aggregate"]["days"][0]
    assert tuesday == {"date": "2025-03-04", "state": "suspect", "latest_run_id": tuesday["latest_run_id"],
                       "reason": f"{left / 1000:.0%} of its usual events ({left:,}; median of 4 Tuesdays: 1,000)"}
    assert shown["jobs"]["aggregate"]["days"][1]["state"] == "succeeded"        # the Wednesday is as usual
    assert shown["jobs"]["aggregate"]["counts"]["suspect"] == 1
    assert shown["jobs"]["metrics"]["days"][0]["state"] == "suspect"
    assert shown["jobs"]["aggregate"]["fix"] is None                            # a warning: nothing to rerun
    view = cli("status", "--end", "2025-03-05", "--days", "2").stdout
    assert "no gaps\nsuspect (a warning: they ran, but their figures are far from the usual):\n" in view
    assert f"  aggregate 2025-03-04: {left / 1000:.0%} of its usual events ({left:,}; median of 4 Tuesdays: 1,000)" in view
    check = cli("status", "--end", "2025-03-05", "--days", "2", "--check")
    assert check.exit_code == 7
    assert f"aggregate 2025-03-04 suspect: {left / 1000:.0%} of its usual events" in check.stdout

    seed_events(conn, SeedSpec(TUESDAY, 1, 200, 500, 4))                       # the late half arrives
    assert cli("status", "--end", "2025-03-05", "--days", "2", "--check").exit_code == 5   # stale now
    assert cli("aggregate", "--date", str(TUESDAY)).exit_code == 0
    assert cli("metrics", "--date", str(TUESDAY)).exit_code == 0
    assert cli("status", "--end", "2025-03-05", "--days", "2", "--check").exit_code == 0


def test_a_revenue_drop_makes_the_metrics_day_suspect_and_not_the_aggregate_day(cli, conn):
    seed_events(conn, SeedSpec(date(2025, 2, 1), 33, 200, 1_000, 3))
    conn.execute("UPDATE events SET payload = jsonb_set(payload, '{total}', '\"0.01\"') WHERE event_type = 'order.placed'"
                 " AND \"timestamp\" >= '2025-03-04T00:00Z' AND \"timestamp\" < '2025-03-05T00:00Z'")
    assert cli("aggregate", "--window", "2025-02-01..2025-03-05").exit_code == 0
    assert cli("metrics", "--window", "2025-02-01..2025-03-05").exit_code == 0
    _, shown = status_json(cli)
    assert [d["state"] for d in shown["jobs"]["aggregate"]["days"]] == ["succeeded", "succeeded"]
    metrics = shown["jobs"]["metrics"]["days"][0]
    assert metrics["state"] == "suspect"
    assert metrics["reason"].startswith("revenue ") and "against its usual (median of 4 Tuesdays: " in metrics["reason"]
    assert "orders" not in metrics["reason"]


# Mostly near each other (so shares fall on both sides of the thresholds), sometimes zero or huge.
counts = st.one_of(st.integers(0, 1_000), st.integers(0, 2**62))
amounts = st.one_of(st.decimals(0, 1_000, places=2), st.decimals(0, 10**15, places=2))
figures = st.one_of(st.none(), st.tuples(counts, counts, amounts))
# A Tuesday's share of its usual: on both sides of the warning share (0.7) and of ±50 %.
SHARES = st.sampled_from([0, 0.45, 0.55, 0.65, 0.75, 1, 1.45, 1.55, 2, 0.3, 1.2])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weeks=st.lists(figures, min_size=0, max_size=4), shares=st.tuples(*[SHARES] * 3), data=st.data())
def test_no_history_zero_or_huge_figures_never_crash_the_suspect_check(db_url, weeks, shares, data):
    """The recorded events, orders and revenue of a Tuesday and of the four Tuesdays before (None: not
    recorded), at random: status marks the succeeded Tuesday suspect exactly by the rule, and never raises.
    The Tuesday's figures are either drawn on their own or a random share of the weeks' medians (so that
    shares fall on both sides of the thresholds)."""
    import statistics

    recorded = [w for w in weeks if w is not None]
    medians = [statistics.median([w[i] for w in recorded]) for i in range(3)] if recorded else None
    tuesday = data.draw(figures) if medians is None or data.draw(st.integers(0, 3)) == 0 else (
        int(medians[0] * shares[0]), int(medians[1] * shares[1]),
        (Decimal(medians[2]) * Decimal(shares[2])).quantize(Decimal("0.01")))

    marked = marked_tuesday(db_url, weeks, tuesday)

    def usual(index: int):
        return statistics.median([w[index] for w in recorded]) if tuesday is not None and len(recorded) >= 2 else 0

    thin = bool(int(usual(0))) and tuesday[0] < 0.7 * int(usual(0))          # events: below 70 % of the median
    moved = any(usual(i) and abs(tuesday[i] / usual(i) - 1) > 0.5 for i in (1, 2))   # orders, revenue: ±50 %
    assert marked == {"aggregate": thin, "metrics": thin or moved}


def marked_tuesday(db_url, weeks: list, tuesday) -> dict[str, bool]:
    """Whether status marks a succeeded Tuesday suspect, per job, given the recorded (events, orders,
    revenue) of the four Tuesdays before (None: not recorded) and of the Tuesday."""
    from pulsecart_cli.ledger import RunStatus
    from pulsecart_cli.status import DayStanding, DayState, with_suspect_days

    with connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM aggregated_days")
        conn.execute("DELETE FROM daily_metrics")
        for day, figure in [(TUESDAY - timedelta(weeks=n), f) for n, f in enumerate(weeks, start=1)] + [(TUESDAY, tuesday)]:
            if figure is not None:
                events, orders, revenue = figure
                conn.execute("INSERT INTO aggregated_days (day, counts_version, events) VALUES (%s, 1, %s)", (day, events))
                conn.execute("INSERT INTO daily_metrics (date, orders_placed, carts_abandoned, revenue)"
                             " VALUES (%s, %s, 0, %s)", (day, orders, revenue))
        succeeded = DayStanding(TUESDAY, DayState.SUCCEEDED, RunStatus.SUCCEEDED, 1, True, None)
        marked = with_suspect_days(conn, {"aggregate": {TUESDAY: succeeded}, "metrics": {TUESDAY: succeeded}}, [TUESDAY])
    for state in (marked[job][TUESDAY] for job in marked):
        assert (state.suspect_reason is not None) == (state.state == DayState.SUSPECT)
    return {job: marked[job][TUESDAY].state == DayState.SUSPECT for job in marked}


USUAL = (1_000, 100, Decimal("1000.00"))


@pytest.mark.parametrize(("tuesday", "aggregate", "metrics"), [
    ((700, 100, Decimal("1000.00")), False, False), ((699, 100, Decimal("1000.00")), True, True),   # events: 70 %
    ((1_000, 50, Decimal("1000.00")), False, False), ((1_000, 49, Decimal("1000.00")), False, True),  # orders: -50 %
    ((1_000, 150, Decimal("1000.00")), False, False), ((1_000, 151, Decimal("1000.00")), False, True),  # +50 %
    ((1_000, 100, Decimal("1500.00")), False, False), ((1_000, 100, Decimal("1500.01")), False, True),  # revenue
    ((1_000, 100, Decimal("499.99")), False, True), ((0, 0, Decimal(0)), True, True),
])
def test_the_suspect_thresholds_hold_at_their_edges(db_url, tuesday, aggregate, metrics):
    assert marked_tuesday(db_url, [USUAL] * 4, tuesday) == {"aggregate": aggregate, "metrics": metrics}


def test_with_fewer_than_two_recorded_weeks_no_day_is_suspect(db_url):
    assert marked_tuesday(db_url, [USUAL, None, None, None], (0, 0, Decimal(0))) == {
        "aggregate": False, "metrics": False}
