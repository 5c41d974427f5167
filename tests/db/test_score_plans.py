"""The score step's plans are set-based: joins and anti-joins, never work repeated once per user.

A per-row SubPlan (a correlated EXISTS, say) walks a table once per outer row: on a simulated day of
20,000 users it was a sequential scan of event_aggregates per user active on D-7 but not on D (67 s where
the neighbouring steps took 0.4 s), and after autovacuum still 8,136 index-only walks (1.2 s). The plans
are checked where the planner knows least: a day just bulk-loaded, with no statistics at all."""

import json
from datetime import date, timedelta

import pytest

from pulsecart_cli.ledger import Invocation
from pulsecart_cli.queries import query
from pulsecart_cli.runner import DailyRequest, run_daily
from pulsecart_cli.seed import SeedSpec, seed_events
from tests.helpers import all_history, connect, insert_events, scores_by_definition, utc

DAYS = [date(2025, 3, 1) + timedelta(days=i) for i in range(10)]
TABLES = ("event_aggregates", "personalization_score_history")


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def per_row_work(plan: dict) -> list[str]:
    """The nodes of an EXPLAIN (FORMAT JSON) plan that repeat work per row: a SubPlan the plan does not
    use hashed (a hashed one runs once; PostgreSQL 17+ names it hashed where it is used, earlier in
    its name), and any sequential scan of the big tables."""
    text = json.dumps(plan)
    found = []
    for node in _nodes(plan):
        name = node.get("Subplan Name", "")
        if (node.get("Parent Relationship") == "SubPlan" and not name.startswith("hashed ")
                and f"hashed {name}" not in text):
            found.append(f"per-row {name}: {node['Node Type']} on {node.get('Relation Name')}")
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in TABLES:
            found.append(f"Seq Scan on {node['Relation Name']}")
    return found


@pytest.fixture
def bulk_loaded(new_database):
    """Ten days of counts and scores, written right after a bulk load: never analyzed."""
    url = new_database()
    with connect(url, autocommit=True) as conn:
        for table in ("events", *TABLES):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        seed_events(conn, SeedSpec(DAYS[0], days=len(DAYS), users=3_000, events_per_day=6_000, seed=7))
        # As of DAYS[9], both active on D-7 (DAYS[2]) but not on D: one is active on D-6 .. D-1 only with
        # an event of weight 0 (kept, with score 0), the other not at all (dropped).
        insert_events(conn, [("edge-kept", "product.viewed", utc(2025, 3, 3, 12)),
                             ("edge-kept", "cart.abandoned", utc(2025, 3, 6, 12)),
                             ("edge-dropped", "product.viewed", utc(2025, 3, 3, 12))])
    assert run_daily(url, DailyRequest("aggregate", DAYS, Invocation("manual", None))).run.ok
    with connect(url, autocommit=True) as conn:
        never_analyzed = conn.execute(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = ANY(%s)"
            " AND last_analyze IS NULL AND last_autoanalyze IS NULL", (list(TABLES),)).fetchone()[0]
        assert never_analyzed == len(TABLES)
        carried = conn.execute("SELECT count(*) FROM job_runs WHERE details ->> 'scores_from_previous_day' = 'true'"
                               ).fetchone()[0]
        assert carried == len(DAYS) - 1      # the path under test is the one the runs took
    return url


@pytest.mark.parametrize("from_previous", [True, False], ids=["carried-forward", "from-scratch"])
def test_the_score_step_never_walks_a_table_once_per_user(bulk_loaded, from_previous):
    params = {"day": DAYS[-1], "from_previous": from_previous}
    with connect(bulk_loaded, autocommit=True) as conn, conn.transaction():
        conn.execute(query("aggregate.begin_day"))          # the day's settings: no nested loops
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + query("aggregate.replace_history"), params).fetchone()[0]
        text = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query("aggregate.replace_history"), params))
    assert per_row_work(plan[0]["Plan"]) == [], text


def test_carried_forward_scores_are_the_scores_by_definition(bulk_loaded):
    """Every as-of day but the first was carried forward: each equals the weighted counts of D-6 .. D,
    including a user kept only for an event of weight 0 and one dropped on leaving the window."""
    with connect(bulk_loaded) as conn:
        history = all_history(conn)
        assert history == scores_by_definition(conn)
    assert history[(DAYS[-1], "edge-kept")] == 0
    assert (DAYS[-1], "edge-dropped") not in history
    assert history[(DAYS[-2], "edge-dropped")] == 1


def test_the_check_sees_a_per_row_subplan():
    """per_row_work itself: a correlated EXISTS as PostgreSQL 18 shows it, and the hashed form it may take."""
    correlated = {"Node Type": "Seq Scan", "Relation Name": "x", "Filter": "(EXISTS(SubPlan 1))", "Plans": [
        {"Node Type": "Index Only Scan", "Parent Relationship": "SubPlan", "Subplan Name": "SubPlan 1",
         "Relation Name": "event_aggregates"}]}
    hashed = {"Node Type": "Seq Scan", "Relation Name": "x", "Filter": "(ANY (u = (hashed SubPlan 2).col1))",
              "Plans": [{"Node Type": "Index Only Scan", "Parent Relationship": "SubPlan",
                         "Subplan Name": "SubPlan 2", "Relation Name": "event_aggregates"}]}
    assert per_row_work(correlated) == ["per-row SubPlan 1: Index Only Scan on event_aggregates"]
    assert per_row_work(hashed) == []
