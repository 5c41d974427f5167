"""Review quarantined dead letters: list, show, replay after a fix, discard (the row is kept)."""

from typing import Any

import psycopg
from psycopg.rows import dict_row

from pulsecart_cli.errors import JobFailed, UsageError
from pulsecart_cli.pubsub import Clients
from pulsecart_cli.queries import query

STATUSES = ("quarantined", "replayed", "discarded")
REPLAY_TIMEOUT_S = 30.0  # per message, to publish and to get its id back


def list_entries(conn: psycopg.Connection, topic: str | None = None, reason: str | None = None,
                 status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Entries newest first, as dicts in the query's column order (the `quarantine list --json` shape)."""
    return conn.cursor(row_factory=dict_row).execute(
        query("quarantine.list"), {"topic": topic, "reason": reason, "status": status, "limit": limit}).fetchall()


def get_entries(conn: psycopg.Connection, ids: list[int]) -> list[dict[str, Any]]:
    rows = conn.cursor(row_factory=dict_row).execute(query("quarantine.get"), {"ids": ids}).fetchall()
    missing = sorted(set(ids) - {row["id"] for row in rows})
    if missing:
        raise UsageError(f"no quarantined message with id {', '.join(map(str, missing))}",
                         hint="see `pulsecart quarantine list`")
    return rows


def printable(data: bytes, limit: int | None = None) -> tuple[str, str]:
    """('text', the text) when the data is UTF-8 without control characters, else ('hex', the hex)."""
    shown = data if limit is None else data[:limit]
    try:
        text = shown.decode("utf-8")
        if all(c.isprintable() or c in "\n\r\t" for c in text):
            return "text", text
    except UnicodeDecodeError:
        pass
    return "hex", shown.hex(" ")


def discard(conn: psycopg.Connection, ids: list[int], reason: str) -> list[int]:
    entries = get_entries(conn, ids)
    not_open = [f"{e['id']} ({e['status']})" for e in entries if e["status"] != "quarantined"]
    if not_open:
        raise UsageError(f"not in quarantine any more: {', '.join(not_open)}")
    with conn.transaction():
        return [r[0] for r in conn.execute(query("quarantine.mark_discarded"), {"ids": ids, "note": reason})]


def replay(conn: psycopg.Connection, clients: Clients, ids: list[int], note: str | None = None) -> list[tuple[int, str]]:
    """Republish quarantined messages to their original topic; each is marked replayed once its
    publish returned a message id. Returns (id, new message id) for each."""
    entries = get_entries(conn, ids)
    not_open = [e["id"] for e in entries if e["status"] != "quarantined"]
    if not_open:
        raise UsageError(f"not in quarantine any more (replayed or discarded): {', '.join(map(str, not_open))}")
    published, failures = [], []
    for entry in entries:
        attributes = dict(entry["attributes"]) | {"reconciled": "true", "replayed_from_quarantine": str(entry["id"])}
        future = clients.publisher.publish(
            clients.topic_path(entry["original_topic"]), bytes(entry["data"]),
            ordering_key=entry["ordering_key"], timeout=REPLAY_TIMEOUT_S, **attributes)
        try:
            message_id = future.result(timeout=REPLAY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - reported below; the row stays quarantined
            failures.append(f"{entry['id']}: {type(exc).__name__}")
            if entry["ordering_key"]:
                clients.publisher.resume_publish(clients.topic_path(entry["original_topic"]), entry["ordering_key"])
            continue
        with conn.transaction():
            conn.execute(query("quarantine.mark_replayed"),
                         {"id": entry["id"], "replayed_message_id": message_id, "note": note})
        published.append((entry["id"], message_id))
    if failures:
        raise JobFailed(f"replayed {len(published)}, failed {len(failures)}: {'; '.join(failures)}")
    return published
