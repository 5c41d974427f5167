"""Complete means complete: a day with a fraction of its usual events waits (check-complete exits 4, the
sensor pokes again), an operator can accept one on purpose (recorded in the ledger, honoured later), and no
history, one week, zero-event days or huge days never crash the check."""

from datetime import UTC, date, datetime, timedelta

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
