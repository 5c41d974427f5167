"""Rendered commands for concrete scheduled and backfill runs, and real runs through `airflow dags test`."""

import ast
import json
import re
from datetime import date

from pulsecart_cli import pubsub
from tests.helpers import add_watcher, drain, event, insert_events, publish_dead_letters, utc


def rendered(result) -> dict:
    """The properties printed by `airflow tasks render`."""
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = re.split(r"# -+\n# property: (\w+)\n# -+\n", result.stdout)
    return {name: value.strip() for name, value in zip(blocks[1::2], blocks[2::2], strict=True)}


def test_the_0200_run_on_march_4_aggregates_march_3(airflow, db_url):
    props = rendered(airflow("tasks", "render", "pulsecart_nightly_aggregation", "aggregate_prior_day",
                             "2025-03-04T02:00:00+00:00"))
    assert props["bash_command"].endswith("-m pulsecart_cli aggregate --date 2025-03-03")
    env = ast.literal_eval(props["env"])
    assert env["PULSECART_DATABASE_URL"].startswith("postgres")

    sensor = rendered(airflow("tasks", "render", "pulsecart_nightly_aggregation", "wait_for_prior_day_events",
                              "2025-03-04T02:00:00+00:00"))
    assert sensor["bash_command"].endswith("-m pulsecart_cli check-complete --date 2025-03-03 --grace 30m --min-share 0.3")
    sensor_env = ast.literal_eval(sensor["env"])
    assert sensor_env["AIRFLOW_CTX_DAG_ID"] == "pulsecart_nightly_aggregation"
    assert "/usr/bin" in sensor_env["PATH"]


def test_metrics_and_reconcile_render(airflow):
    metrics = rendered(airflow("tasks", "render", "pulsecart_daily_metrics", "compute_daily_metrics",
                               "2025-01-01T03:00:00+00:00"))
    assert metrics["bash_command"].endswith("metrics --date 2024-12-31")
    sensor = rendered(airflow("tasks", "render", "pulsecart_daily_metrics", "wait_for_prior_day_events",
                              "2025-01-01T03:00:00+00:00"))
    assert sensor["bash_command"].endswith("-m pulsecart_cli check-complete --date 2024-12-31 --grace 30m --min-share 0.3")
    assert ast.literal_eval(sensor["env"])["AIRFLOW_CTX_DAG_ID"] == "pulsecart_daily_metrics"

    plain = rendered(airflow("tasks", "render", "pulsecart_dead_letter_reconciliation", "reconcile_user_actions",
                             "2025-03-04T06:00:00+00:00"))
    assert plain["bash_command"].endswith("reconcile --topic user-actions")
    with_project = rendered(airflow("tasks", "render", "pulsecart_dead_letter_reconciliation",
                                    "reconcile_user_actions", "2025-03-04T06:00:00+00:00",
                                    extra_env={"AIRFLOW_VAR_PULSECART_GCP_PROJECT": "pulsecart-prod"}))
    assert with_project["bash_command"].endswith("reconcile --topic user-actions --project pulsecart-prod")


def ledger(conn):
    return conn.execute("SELECT job, run_date, status, trigger, airflow_run_id FROM job_runs ORDER BY id").fetchall()


def test_dags_test_runs_the_nightly_aggregation_for_the_prior_day(airflow, conn):
    insert_events(conn, [
        ("alice", "order.placed", utc(2025, 3, 3, 12)),
        ("bob", "product.viewed", utc(2025, 3, 4, 1, 0)),    # the consumer has moved past March 3 + 30 min
    ])
    result = airflow("dags", "test", "pulsecart_nightly_aggregation", "2025-03-04")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "state=success" in result.stdout + result.stderr
    rows = ledger(conn)
    assert [(job, run_date, status, trigger) for job, run_date, status, trigger, _ in rows] == [
        ("aggregate", date(2025, 3, 3), "succeeded", "airflow")]
    assert rows[0][4].startswith("manual__")
    assert conn.execute("SELECT user_id, event_count FROM event_aggregates").fetchall() == [("alice", 1)]


def test_dags_test_runs_daily_metrics_for_the_prior_day(airflow, conn):
    insert_events(conn, [("a", "order.placed", utc(2025, 3, 3, 12), {"total": 12.5}),
                         ("b", "product.viewed", utc(2025, 3, 4, 0, 45))])   # complete: past midnight + 30 min
    result = airflow("dags", "test", "pulsecart_daily_metrics", "2025-03-04")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [(r[0], r[1], r[2], r[3]) for r in ledger(conn)] == [("metrics", date(2025, 3, 3), "succeeded", "airflow")]
    assert conn.execute("SELECT orders_placed, revenue FROM daily_metrics").fetchone() == (1, 12.5)


def test_a_failing_job_fails_the_task_for_a_retry(airflow):
    result = airflow("tasks", "test", "pulsecart_daily_metrics", "compute_daily_metrics", "2025-03-06",
                     extra_env={"AIRFLOW_CONN_PULSECART_DB": "postgresql://nobody:topsecret@127.0.0.1:1/none"})
    output = result.stdout + result.stderr
    assert "Error: cannot connect to the database at postgres://nobody:***@127.0.0.1:1/none" in output
    assert "Command exited with return code 1" in output
    assert "new_state=up_for_retry" in output
    assert "topsecret" not in output


def test_a_backfill_run_processes_the_day_before_its_logical_date(airflow, conn):
    created = airflow("backfill", "create", "--dag-id", "pulsecart_daily_metrics", "--from-date", "2025-03-10",
                      "--to-date", "2025-03-11", "--reprocess-behavior", "completed")
    assert created.returncode == 0, created.stderr[-3000:]
    runs = airflow("dags", "list-runs", "pulsecart_daily_metrics")
    assert set(re.findall(r"backfill__\S+", runs.stdout)) == {"backfill__2025-03-10T03:00:00+00:00"}
    result = airflow("tasks", "test", "pulsecart_daily_metrics", "compute_daily_metrics",
                     "backfill__2025-03-10T03:00:00+00:00")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ledger(conn) == [("metrics", date(2025, 3, 9), "succeeded", "airflow", "backfill__2025-03-10T03:00:00+00:00")]


def test_dags_test_reconciles_every_topic_on_the_emulator(airflow, conn, cli, gcp_project, pubsub_emulator,
                                                          smtp_sink):
    """Quarantining a message is not a failure: no alert."""
    assert cli("pubsub", "setup").exit_code == 0
    clients = pubsub.connect(gcp_project)
    watch = add_watcher(clients)
    publish_dead_letters(clients, [(event(1), {}, ""), (b"not json {", {}, ""), (event(2), {}, "")])

    result = airflow("dags", "test", "pulsecart_dead_letter_reconciliation", "2025-03-04T06:00:00+00:00",
                     extra_env={"PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
                                "AIRFLOW_VAR_PULSECART_GCP_PROJECT": gcp_project,
                                "AIRFLOW_CONN_SMTP_DEFAULT": smtp_sink.connection_uri,
                                "AIRFLOW_VAR_PULSECART_ALERT_EMAILS": "ops@pulsecart.test"})

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "state=success" in result.stdout + result.stderr
    runs = conn.execute("SELECT target, status, trigger, rows_written FROM job_runs ORDER BY target").fetchall()
    assert runs == [("pulsecart.commerce-events", "succeeded", "airflow", 3),
                    ("pulsecart.system-events", "succeeded", "airflow", 0),
                    ("pulsecart.user-actions", "succeeded", "airflow", 0)]
    assert sorted(json.loads(m.data)["event_id"] for m in drain(clients, watch)) == ["e1", "e2"]
    assert conn.execute("SELECT data, reason FROM dead_letter_quarantine").fetchall() == [(b"not json {", "not JSON")]
    assert smtp_sink.messages == []


def test_the_heal_task_renders_the_last_30_days_and_nothing_in_a_backfill(airflow):
    props = rendered(airflow("tasks", "render", "pulsecart_nightly_aggregation", "heal_aggregate",
                             "2025-03-04T02:00:00+00:00"))
    assert props["bash_command"].endswith(
        "-m pulsecart_cli aggregate --window 2025-02-02..2025-03-03 --stale --only-failed --keep-going")
    shorter = rendered(airflow("tasks", "render", "pulsecart_daily_metrics", "heal_metrics", "2025-03-04T03:00:00+00:00",
                               extra_env={"AIRFLOW_VAR_PULSECART_HEAL_DAYS": "7"}))
    assert shorter["bash_command"].endswith("metrics --window 2025-02-25..2025-03-03 --stale --only-failed --keep-going")
    prune = rendered(airflow("tasks", "render", "pulsecart_nightly_aggregation", "prune_score_history",
                             "2025-03-04T02:00:00+00:00"))
    assert prune["bash_command"].endswith("-m pulsecart_cli prune --keep-days 400")


def test_the_next_nightly_runs_heal_a_day_whose_events_changed_after_its_run(airflow, conn, cli):
    """Late events of D-3 arrive after its run (a reconciled dead letter, say): the next scheduled runs of
    both daily DAGs repair D-3's metrics and the scores that read it, with no command typed by hand."""
    insert_events(conn, [(f"u{d}", "order.placed", utc(2025, 3, d, 12), {"total": 10}) for d in range(1, 6)]
                  + [("next", "product.viewed", utc(2025, 3, 6, 1))])
    for job in ("aggregate", "metrics"):
        assert cli(job, "--window", "2025-03-01..2025-03-04").exit_code == 0
    insert_events(conn, [("late", "order.placed", utc(2025, 3, 2, 23), {"total": 5})])   # D-3 of the 03-06 runs
    assert cli("status", "--check", "--end", "2025-03-04", "--days", "4").exit_code == 5

    for dag_id in ("pulsecart_nightly_aggregation", "pulsecart_daily_metrics"):   # keep 2025's scores today
        result = airflow("dags", "test", dag_id, "2025-03-06", extra_env={"AIRFLOW_VAR_PULSECART_KEEP_DAYS": "100000"})
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    check = cli("status", "--check", "--end", "2025-03-05", "--days", "5")
    assert check.exit_code == 0, check.output
    assert conn.execute("SELECT orders_placed, revenue FROM daily_metrics WHERE date = '2025-03-02'").fetchone() == (2, 15)
    assert conn.execute("SELECT score FROM personalization_scores WHERE user_id = 'late'").fetchone() == (10,)
    healed = conn.execute("SELECT job, run_date FROM job_runs WHERE trigger = 'airflow' ORDER BY id").fetchall()
    assert healed == [("aggregate", date(2025, 3, 5)), ("aggregate", date(2025, 3, 2)),
                      ("metrics", date(2025, 3, 5)), ("metrics", date(2025, 3, 2))]
