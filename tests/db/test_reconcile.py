"""Dead-letter reconciliation against the real Pub/Sub emulator and a real PostgreSQL."""

import json

import psycopg
import pytest

from pulsecart_cli import pubsub
from pulsecart_cli.reconcile import Options, Reconciler, classify
from pulsecart_cli.units import lock_keys
from tests.helpers import PAIR, add_watcher, connect, drain, event, publish_dead_letters

FAST = ("--pull-timeout", "1", "--publish-timeout", "5")


@pytest.fixture
def topology(gcp_project, cli):
    """The seed's topics and subscriptions, plus a subscription that sees what is republished."""
    result = cli("pubsub", "setup")
    assert result.exit_code == 0, result.output
    clients = pubsub.connect(gcp_project)
    watch = add_watcher(clients)
    return clients, watch


def quarantine_rows(conn):
    return conn.execute("SELECT message_id, reason, data, attributes, ordering_key, dead_letter_topic, original_topic"
                        " FROM dead_letter_quarantine ORDER BY id").fetchall()


def test_classify_rules():
    assert classify(b'{"event_type": "x"}', {}, "", 3).republish
    assert classify(b"\xff", {}, "", 3).reason == "not JSON"
    assert classify(b'"text"', {}, "", 3).reason == "not a JSON object (a JSON string)"
    assert classify(b"null", {}, "", 3).reason == "not a JSON object (a JSON null)"
    assert classify(b"[1]", {}, "", 3).reason == "not a JSON object (a JSON array)"
    assert classify(b'{"event_type": ""}', {}, "", 3).reason == "no event_type"
    assert classify(b'{"event_type": "x"}', {"reconcile_count": "3"}, "", 3).reason == "reconcile limit reached (3 of 3)"
    assert classify(b'{"event_type": "x"}', {"reconcile_count": "two"}, "", 3).reason == "invalid reconcile_count 'two'"
    verdict = classify(b'{"event_type": "x", "user_id": 12}', {"reconcile_count": "2", "k": "v"}, "", 3)
    assert verdict.attributes == {"k": "v", "reconcile_count": "3", "reconciled": "true", "event_type": "x"}
    assert verdict.ordering_key == "12"
    assert classify(b'{"event_type": "x", "user_id": "u"}', {}, "own-key", 3).ordering_key == "own-key"


def test_mixed_backlog_republishes_valid_and_quarantines_the_rest(topology, cli, conn):
    clients, watch = topology
    big = event(99, padding="x" * 1_000_000)
    valid = [
        (event(1), {"source": "checkout"}, ""),
        (event(2), {}, "cart-key"),
        (event(3), {"reconcile_count": "1"}, ""),
        (big, {}, ""),
    ]
    invalid = [
        (b"\x00\x01 not json", {"source": "legacy"}, ""),
        (b"[1, 2, 3]", {}, ""),
        (b'{"user_id": "u1"}', {}, "u1"),
        (event(4), {"reconcile_count": "3"}, ""),
    ]
    ids = publish_dead_letters(clients, valid + invalid)

    result = cli("reconcile", "--topic", "commerce-events", "--json", *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["topics"][0]
    assert (report["pulled"], report["republished"], report["quarantined"], report["failed"]) == (8, 4, 4, 0)

    republished = {m.data: m for m in drain(clients, watch)}
    assert set(republished) == {data for data, _, _ in valid}
    for i, (data, attrs, key) in enumerate(valid):
        message = republished[data]
        parsed = json.loads(data)
        expected = attrs | {"reconciled": "true", "event_type": "order.placed", "event_id": parsed["event_id"],
                            "reconcile_count": str(int(attrs.get("reconcile_count", 0)) + 1)}
        assert dict(message.attributes) == expected, i
        assert message.ordering_key == (key or parsed["user_id"])

    rows = {r[0]: r for r in quarantine_rows(conn)}
    assert {message_id: r[1] for message_id, r in rows.items()} == {
        ids[4]: "not JSON", ids[5]: "not a JSON object (a JSON array)", ids[6]: "no event_type",
        ids[7]: "reconcile limit reached (3 of 3)"}
    assert bytes(rows[ids[4]][2]) == b"\x00\x01 not json"
    assert rows[ids[4]][3] == {"source": "legacy"}
    assert rows[ids[6]][4] == "u1"
    assert {(r[5], r[6]) for r in rows.values()} == {(PAIR.dead_letter, PAIR.original)}

    assert drain(clients, clients.subscription_path(PAIR.reconciler_subscription)) == []
    run = conn.execute("SELECT job, target, status, rows_written, details FROM job_runs").fetchone()
    assert run[:4] == ("reconcile", PAIR.original, "succeeded", 8)
    assert run[4]["reasons"]["not JSON"] == 1


def test_publish_failure_acks_nothing_unpublished_and_a_second_run_completes(topology, cli, conn):
    clients, _ = topology
    valid = [(event(i), {}, "") for i in range(20)]
    publish_dead_letters(clients, [*valid, (b"garbage", {}, "")])
    clients.publisher.delete_topic(request={"topic": clients.topic_path(PAIR.original)})

    failed = cli("reconcile", "--topic", "commerce-events", "--json", *FAST)
    assert failed.exit_code == 1, failed.output
    report = json.loads(failed.stdout)["topics"][0]
    assert (report["status"], report["republished"], report["quarantined"], report["failed"]) == ("failed", 0, 1, 20)
    assert "not republished (left unacked)" in report["error"]
    assert "NotFound" in report["error"]

    clients.publisher.create_topic(request={"name": clients.topic_path(PAIR.original)})
    watch = add_watcher(clients, "after-fix")
    again = cli("reconcile", "--topic", "commerce-events", "--json", *FAST)
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)["topics"][0]
    assert (second["republished"], second["quarantined"], second["failed"]) == (20, 0, 0)
    assert sorted(json.loads(m.data)["event_id"] for m in drain(clients, watch)) == sorted(f"e{i}" for i in range(20))
    assert len(quarantine_rows(conn)) == 1
    assert [r[0] for r in conn.execute("SELECT status FROM job_runs ORDER BY id")] == ["failed", "succeeded"]


def test_dry_run_acks_nothing_and_changes_nothing(topology, cli, conn):
    clients, watch = topology
    publish_dead_letters(clients, [(event(1), {}, ""), (b"nope", {}, "")])
    dry = cli("reconcile", "--topic", "pulsecart.commerce-events", "--dry-run", "--json", *FAST)
    assert dry.exit_code == 0
    report = json.loads(dry.stdout)["topics"][0]
    assert (report["pulled"], report["republished"], report["quarantined"], report["dry_run"]) == (2, 1, 1, True)
    assert drain(clients, watch) == []
    assert quarantine_rows(conn) == []

    real = cli("reconcile", "--topic", "commerce-events", "--json", *FAST)
    assert json.loads(real.stdout)["topics"][0]["pulled"] == 2
    assert len(drain(clients, watch)) == 1


class ReconcilerThatCrashesBeforeAck(Reconciler):
    """Test double for a fault the emulator cannot produce on cue: the process dies after the quarantine
    commit and before the ack. It records the ack ids so the test can end their lease at once."""

    def _ack(self, ack_ids):
        self.unacked = ack_ids
        raise RuntimeError("crashed before ack")


def test_a_redelivered_quarantined_message_is_stored_once(topology, cli, conn):
    clients, _ = topology
    publish_dead_letters(clients, [(b"not json at all", {}, "")])
    crashing = ReconcilerThatCrashesBeforeAck(clients, conn, PAIR, Options(pull_timeout_s=1, publish_timeout_s=5))
    report = crashing.run()
    assert report.aborted
    assert report.errors == ["RuntimeError: crashed before ack"]
    assert len(quarantine_rows(conn)) == 1
    clients.subscriber.modify_ack_deadline(request={
        "subscription": clients.subscription_path(PAIR.reconciler_subscription),
        "ack_ids": crashing.unacked, "ack_deadline_seconds": 0})

    result = cli("reconcile", "--topic", "commerce-events", "--json", *FAST)
    assert result.exit_code == 0
    report = json.loads(result.stdout)["topics"][0]
    assert (report["pulled"], report["quarantined"], report["already_quarantined"]) == (1, 0, 1)
    assert len(quarantine_rows(conn)) == 1


def test_replay_and_discard(topology, cli, conn):
    clients, watch = topology
    publish_dead_letters(clients, [(b'{"user_id": "u9"}', {"a": "1"}, "u9"), (b"\xfe\xff", {}, "")])
    assert cli("reconcile", "--topic", "commerce-events", *FAST).exit_code == 0
    ids = dict(conn.execute("SELECT reason, id FROM dead_letter_quarantine").fetchall())
    first_id, second_id = ids["no event_type"], ids["not JSON"]

    shown = cli("quarantine", "show", str(second_id))
    assert shown.exit_code == 0
    assert "data (hex, 2 bytes):\nfe ff" in shown.stdout
    assert '{"user_id": "u9"}' in cli("quarantine", "show", str(first_id)).stdout

    listed = cli("quarantine", "list", "--topic", "commerce-events", "--reason", "event_type", "--json")
    assert [e["id"] for e in json.loads(listed.stdout)["entries"]] == [first_id]

    replayed = cli("quarantine", "replay", str(first_id), "--note", "consumer fixed")
    assert replayed.exit_code == 0, replayed.output
    (message,) = drain(clients, watch)
    assert message.data == b'{"user_id": "u9"}'
    assert dict(message.attributes) == {"a": "1", "reconciled": "true", "replayed_from_quarantine": str(first_id)}
    assert message.ordering_key == "u9"
    status = conn.execute("SELECT status, status_note, replayed_message_id FROM dead_letter_quarantine"
                          " WHERE id = %s", (first_id,)).fetchone()
    assert status == ("replayed", "consumer fixed", message.message_id)
    again = cli("quarantine", "replay", str(first_id))
    assert again.exit_code == 2
    assert "not in quarantine any more" in again.stderr

    discarded = cli("quarantine", "discard", str(second_id), "--reason", "binary junk from a test client")
    assert discarded.exit_code == 0
    assert conn.execute("SELECT status, status_note FROM dead_letter_quarantine WHERE id = %s",
                        (second_id,)).fetchone() == ("discarded", "binary junk from a test client")
    assert cli("quarantine", "show", "999999").exit_code == 2


def test_configuration_errors_name_what_is_wrong(pubsub_emulator, cli, monkeypatch, gcp_project):
    unknown = cli("reconcile", "--topic", "payments")
    assert unknown.exit_code == 2
    assert "unknown topic 'payments'" in unknown.stderr

    missing_subscription = cli("reconcile", "--topic", "user-actions", *FAST)
    assert missing_subscription.exit_code == 2
    assert (f"subscription projects/{gcp_project}/subscriptions/sub-pulsecart.user-actions.dead-letter-reconciler"
            " does not exist") in missing_subscription.stderr

    monkeypatch.delenv("PULSECART_GCP_PROJECT")
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    no_project = cli("reconcile", "--topic", "all")
    assert no_project.exit_code == 2
    assert "no GCP project" in no_project.stderr


def test_pubsub_setup_is_idempotent_and_sets_the_dead_letter_policy(gcp_project, cli):
    assert cli("pubsub", "setup").exit_code == 0
    again = cli("pubsub", "setup")
    assert again.stdout.strip() == "everything already exists"
    clients = pubsub.connect(gcp_project)
    for pair in map(pubsub.TopicPair, pubsub.TOPICS):
        consumer = clients.subscriber.get_subscription(
            request={"subscription": clients.subscription_path(pair.consumer_subscription)})
        assert consumer.dead_letter_policy.dead_letter_topic == clients.topic_path(pair.dead_letter)
        reconciler = clients.subscriber.get_subscription(
            request={"subscription": clients.subscription_path(pair.reconciler_subscription)})
        assert reconciler.topic == clients.topic_path(pair.dead_letter)


def test_reconcile_all_writes_one_ledger_row_per_topic(topology, cli, conn):
    result = cli("reconcile", "--topic", "all", "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert [t["topic"] for t in json.loads(result.stdout)["topics"]] == [
        "pulsecart.commerce-events", "pulsecart.user-actions", "pulsecart.system-events"]
    assert conn.execute("SELECT count(*) FROM job_runs WHERE job = 'reconcile' AND status = 'succeeded'"
                        ).fetchone()[0] == 3
    assert isinstance(conn, psycopg.Connection)


SLOW_QUARANTINE = """
CREATE FUNCTION slow_quarantine() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$;
CREATE TRIGGER slow_quarantine BEFORE INSERT ON dead_letter_quarantine
    FOR EACH ROW EXECUTE FUNCTION slow_quarantine();
"""


def test_emulator_frozen_mid_run_loses_nothing(topology, conn, db_url, pubsub_emulator):
    """SIGSTOP the emulator after the run has pulled its batch (while the quarantine row is being
    written, held open by a slow trigger) and past the publish timeout: the run exits 1, and once
    the emulator is back a second run accounts for every message."""
    import os
    import signal
    import subprocess
    import sys
    import time

    clients, watch = topology
    subscription = clients.subscription_path(PAIR.reconciler_subscription)
    clients.subscriber.delete_subscription(request={"subscription": subscription})
    clients.subscriber.create_subscription(request={  # a short lease, so unacked messages return quickly
        "name": subscription, "topic": clients.topic_path(PAIR.dead_letter), "ack_deadline_seconds": 10})
    valid = [(event(i), {}, "") for i in range(30)]
    publish_dead_letters(clients, [*valid, (b"broken", {}, "")])
    conn.execute(SLOW_QUARANTINE)

    env = {**os.environ, "PULSECART_DATABASE_URL": db_url}
    args = [sys.executable, "-m", "pulsecart_cli", "reconcile", "--topic", "commerce-events", "--json",
            "--publish-timeout", "3", "--pull-timeout", "1"]
    run = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%INSERT INTO dead_letter_quarantine%'"
                           " AND wait_event = 'PgSleep'").fetchone()[0]:
        assert time.monotonic() < deadline, "the run never reached its quarantine insert"
        time.sleep(0.05)
    group = os.getpgid(pubsub_emulator.process.pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        out, err = run.communicate(timeout=120)
    finally:
        os.killpg(group, signal.SIGCONT)
    assert run.returncode == 1, err
    report = json.loads(out)["topics"][0]
    assert report["status"] == "failed"
    assert report["republished"] < 30

    conn.execute("DROP TRIGGER slow_quarantine ON dead_letter_quarantine")
    time.sleep(11)  # the lease of anything left unacked runs out
    again = subprocess.run(args, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert again.returncode == 0, again.stderr
    delivered = {json.loads(m.data)["event_id"] for m in drain(clients, watch)}
    assert delivered == {f"e{i}" for i in range(30)}   # at least once, none lost
    assert [r[1] for r in quarantine_rows(conn)] == ["not JSON"]
    assert drain(clients, subscription) == []


def test_reconcile_all_drains_every_topic_whose_lock_is_free(topology, cli, conn, db_url):
    clients, watch = topology
    publish_dead_letters(clients, [(event(1), {}, ""), (b"not json", {}, ""), (event(2), {}, "")])
    busy = pubsub.TopicPair("user-actions").original
    with connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%(job_key)s, %(unit_key)s)", lock_keys("reconcile", None, busy))
        holder_pid = holder.info.backend_pid
        result = cli("reconcile", "--topic", "all", "--json", *FAST)

    assert result.exit_code == 3, result.output
    topics = {t["topic"]: t for t in json.loads(result.stdout)["topics"]}
    assert [(name, t["status"]) for name, t in topics.items()] == [
        ("pulsecart.commerce-events", "succeeded"), ("pulsecart.user-actions", "busy"),
        ("pulsecart.system-events", "succeeded")]
    assert (topics[PAIR.original]["republished"], topics[PAIR.original]["quarantined"]) == (2, 1)
    assert sorted(json.loads(m.data)["event_id"] for m in drain(clients, watch)) == ["e1", "e2"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [(f"Error: reconcile: pulsecart.user-actions skipped: reconcile pulsecart.user-actions is locked "
                       f"by another session (server backend pid {holder_pid}); 2 other topic(s) done")]
    assert conn.execute("SELECT target, status FROM job_runs ORDER BY id").fetchall() == [
        ("pulsecart.commerce-events", "succeeded"), ("pulsecart.system-events", "succeeded")]


def test_a_failed_reconcile_ends_in_one_error_line_with_its_unacked_count(topology, cli):
    clients, _ = topology
    publish_dead_letters(clients, [(event(i), {}, "") for i in range(3)])
    clients.publisher.delete_topic(request={"topic": clients.topic_path(PAIR.original)})
    result = cli("reconcile", "--topic", "all", *FAST)
    assert result.exit_code == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: reconcile: pulsecart.commerce-events failed: "
                           "3 message(s) not republished (left unacked): NotFound")
    assert line.endswith("; 2 other topic(s) done")
