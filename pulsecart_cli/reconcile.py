"""Dead-letter reconciliation: republish what can be processed, quarantine the rest, lose nothing.

A message is acked only after its republish returned a message id or its quarantine row committed.
A message whose publish failed is left unacked: Pub/Sub delivers it again to a later run.
"""

import json
import time
from collections import deque
from concurrent import futures as cf
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pulsecart_cli import signals
from pulsecart_cli.errors import ConfigError, Interrupted, first_line
from pulsecart_cli.ledger import WorkOutput
from pulsecart_cli.pubsub import Clients, TopicPair, service_error
from pulsecart_cli.queries import query

PULL_BATCH = 1000
ACK_CHUNK = 1000
MAX_BATCHES_IN_FLIGHT = 8
DEADLINE_EXTENSION_S = 60


JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


@dataclass(frozen=True)
class Options:
    max_messages: int = 10_000
    max_reconciles: int = 3
    dry_run: bool = False
    publish_timeout_s: float = 30.0
    pull_timeout_s: float = 5.0


@dataclass(frozen=True)
class Disposition:
    republish: bool
    reason: str | None = None
    attributes: dict[str, str] | None = None
    ordering_key: str = ""


def classify(data: bytes, attributes: dict[str, str], ordering_key: str, max_reconciles: int) -> Disposition:
    """Republish a JSON object with a non-empty event_type, below the reconcile limit; quarantine the rest."""
    try:
        event = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return Disposition(False, "not JSON")
    if not isinstance(event, dict):
        return Disposition(False, f"not a JSON object (a JSON {JSON_TYPES[type(event)]})")
    event_type = event.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip():
        return Disposition(False, "no event_type")
    try:
        count = int(attributes.get("reconcile_count", "0"))
    except ValueError:
        return Disposition(False, f"invalid reconcile_count {attributes['reconcile_count']!r}")
    if count >= max_reconciles:
        return Disposition(False, f"reconcile limit reached ({count} of {max_reconciles})")
    republished = dict(attributes) | {"reconciled": "true", "reconcile_count": str(count + 1),
                                      "event_type": event_type}
    if event.get("event_id") is not None:
        republished["event_id"] = str(event["event_id"])
    user_id = event.get("user_id")
    return Disposition(True, attributes=republished,
                       ordering_key=ordering_key or ("" if user_id is None else str(user_id)))


@dataclass
class Report:
    topic: str
    pulled: int = 0
    republished: int = 0
    quarantined: int = 0
    already_quarantined: int = 0
    failed: int = 0
    ack_failed: int = 0
    aborted: bool = False
    dry_run: bool = False
    reasons: dict[str | None, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def work_output(self) -> WorkOutput:
        details = {k: v for k, v in vars(self).items() if k != "errors"}
        problems = ["aborted"] if self.aborted else []
        if self.failed:
            problems.append(f"{self.failed} message(s) not republished (left unacked)")
        if self.ack_failed:
            problems.append(f"{self.ack_failed} ack(s) failed (those messages will be delivered again)")
        error = f"{', '.join(problems)}: {'; '.join(self.errors[:3])}" if problems else None
        return WorkOutput(rows=self.republished + self.quarantined, details=details, error=error)


@dataclass
class _Batch:
    ack_ids_done: list[str]
    pending: list[tuple[str, cf.Future[str], str]]  # (ack_id, future, ordering_key)


class Reconciler:
    def __init__(self, clients: Clients, conn: psycopg.Connection, pair: TopicPair, options: Options):
        self.clients = clients
        self.conn = conn
        self.pair = pair
        self.options = options
        self.subscription = clients.subscription_path(pair.reconciler_subscription)
        self.original_topic = clients.topic_path(pair.original)
        self.report = Report(topic=pair.original, dry_run=options.dry_run)

    def run(self) -> Report:
        """Drain the subscription. An unexpected error ends the run with the counts so far; anything
        not yet acked is delivered again."""
        try:
            self._drain()
        except (Exception, Interrupted) as exc:  # noqa: BLE001 - reported as the run's error, counts kept
            self.report.aborted = True
            self._note_error(exc)
        return self.report

    def _drain(self) -> None:
        """Pull, classify, republish or quarantine, ack; after a signal, pull no more, settle the publishes under
        way (ack what was republished, hand the rest back), then raise the interruption."""
        in_flight: deque[_Batch] = deque()
        seen: set[str] = set()
        leased: list[str] = []
        with suppress(Interrupted):  # a statement refused after the signal
            while (self.report.pulled < self.options.max_messages and not (self.report.failed or self.report.ack_failed)
                   and not signals.requested()):
                received = self._pull(min(PULL_BATCH, self.options.max_messages - self.report.pulled))
                fresh = [m for m in received if m.message.message_id not in seen]
                if not fresh:
                    break
                seen.update(m.message.message_id for m in fresh)
                if self.options.dry_run:
                    leased.extend(m.ack_id for m in received)
                self.report.pulled += len(fresh)
                batch = self._handle(fresh)
                if batch is not None:
                    in_flight.append(batch)
                while len(in_flight) > MAX_BATCHES_IN_FLIGHT:
                    self._settle(in_flight.popleft(), in_flight)
        while in_flight:
            self._settle(in_flight.popleft(), in_flight)
        if leased:
            self._modify_deadline(leased, 0)  # a dry run hands everything straight back
        signals.check()

    def _pull(self, max_messages: int) -> list[Any]:
        from google.api_core import exceptions as gexc

        try:
            response = self.clients.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": max_messages},
                timeout=self.options.pull_timeout_s, retry=None)
        except gexc.DeadlineExceeded:
            return []
        return list(response.received_messages)

    def _handle(self, received: list[Any]) -> _Batch | None:
        quarantine_rows, quarantined_ack_ids, to_publish = [], [], []
        for item in received:
            message = item.message
            disposition = classify(message.data, dict(message.attributes), message.ordering_key,
                                   self.options.max_reconciles)
            if disposition.republish:
                to_publish.append((item.ack_id, message, disposition))
                continue
            self.report.reasons[disposition.reason] = self.report.reasons.get(disposition.reason, 0) + 1
            quarantined_ack_ids.append(item.ack_id)
            quarantine_rows.append({
                "dead_letter_topic": self.pair.dead_letter, "original_topic": self.pair.original,
                "message_id": message.message_id, "data": message.data,
                "attributes": Jsonb(dict(message.attributes)), "ordering_key": message.ordering_key,
                "publish_time": message.publish_time, "reason": disposition.reason,
            })
        if self.options.dry_run:
            self.report.quarantined += len(quarantine_rows)
            self.report.republished += len(to_publish)
            return None
        stored = self._store(quarantine_rows)
        self.report.quarantined += stored
        self.report.already_quarantined += len(quarantine_rows) - stored
        pending = [
            (ack_id, self.clients.publisher.publish(
                self.original_topic, message.data, ordering_key=disposition.ordering_key,
                timeout=self.options.publish_timeout_s, **(disposition.attributes or {})), disposition.ordering_key)
            for ack_id, message, disposition in to_publish
        ]
        return _Batch(ack_ids_done=quarantined_ack_ids, pending=pending)

    def _store(self, rows: list[dict[str, Any]]) -> int:
        """Commit the quarantine rows; returns how many were new (a redelivery is stored once)."""
        if not rows:
            return 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(query("quarantine.insert"), rows, returning=False)
            return cur.rowcount

    def _settle(self, batch: _Batch, waiting: deque[_Batch]) -> None:
        """Wait for a batch's publishes, keeping its and the waiting batches' messages leased, then ack."""
        futures = {future: (ack_id, key) for ack_id, future, key in batch.pending}
        deadline = time.monotonic() + self.options.publish_timeout_s
        not_done = set(futures)
        while not_done and time.monotonic() < deadline:  # after a signal too: a publish under way still lands
            _, not_done = cf.wait(not_done, timeout=min(10.0, max(0.0, deadline - time.monotonic())),
                                  return_when=cf.ALL_COMPLETED)
            if not_done:
                self._modify_deadline([futures[f][0] for f in not_done] + [a for b in waiting for a, _, _ in b.pending],
                                      DEADLINE_EXTENSION_S)
        acks, unpublished = list(batch.ack_ids_done), []
        for future, (ack_id, key) in futures.items():
            try:
                if future in not_done:
                    raise TimeoutError(f"no answer within {self.options.publish_timeout_s:g}s")
                future.result(timeout=0)
            except Exception as exc:  # noqa: BLE001 - any publish failure leaves the message unacked
                self.report.failed += 1
                self._note_error(exc)
                unpublished.append(ack_id)
                if key:
                    self._resume(key)
            else:
                acks.append(ack_id)
                self.report.republished += 1
        self._ack(acks)
        if unpublished:
            self._modify_deadline(unpublished, 0)  # back to the subscription now, for the next run

    def _resume(self, ordering_key: str) -> None:
        """A failed publish pauses its ordering key; resume it so later messages with the key can go."""
        try:
            self.clients.publisher.resume_publish(self.original_topic, ordering_key)
        except RuntimeError:  # the key was not paused (the failure was not an ordered-batch failure)
            pass

    def _note_error(self, exc: BaseException) -> None:
        if len(self.report.errors) < 5:
            self.report.errors.append(f"{type(exc).__name__}: {first_line(exc)}"[:300])

    def _ack(self, ack_ids: list[str]) -> None:
        """Ack in chunks. A failed ack loses nothing (the message is delivered again and a republish or
        quarantine repeats, idempotently for quarantine), but the run is reported failed."""
        for start in range(0, len(ack_ids), ACK_CHUNK):
            chunk = ack_ids[start:start + ACK_CHUNK]
            try:
                self.clients.subscriber.acknowledge(
                    request={"subscription": self.subscription, "ack_ids": chunk},
                    timeout=self.options.publish_timeout_s)
            except Exception as exc:  # noqa: BLE001 - see above
                self.report.ack_failed += len(chunk)
                self._note_error(exc)

    def _modify_deadline(self, ack_ids: list[str], seconds: int) -> None:
        for start in range(0, len(ack_ids), ACK_CHUNK):
            try:
                self.clients.subscriber.modify_ack_deadline(request={
                    "subscription": self.subscription, "ack_ids": ack_ids[start:start + ACK_CHUNK],
                    "ack_deadline_seconds": seconds}, timeout=5, retry=None)
            except Exception:  # noqa: BLE001, S110 - best effort: a lease that runs out only means a redelivery
                pass


def check_subscription(clients: Clients, pair: TopicPair) -> None:
    from google.api_core import exceptions as gexc

    path = clients.subscription_path(pair.reconciler_subscription)
    try:
        clients.subscriber.get_subscription(request={"subscription": path}, timeout=10)
    except gexc.NotFound as exc:
        raise ConfigError(f"subscription {path} does not exist",
                          hint="create it with `pulsecart pubsub setup` (local) or Terraform") from exc
    except gexc.GoogleAPICallError as exc:
        raise service_error(exc, f"read subscription {path}") from exc


def reconcile_topic(clients: Clients, conn: psycopg.Connection, pair: TopicPair, options: Options) -> WorkOutput:
    return Reconciler(clients, conn, pair, options).run().work_output()
