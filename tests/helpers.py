"""Helpers and constants shared by the test modules (fixtures live in conftest.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pulsecart_cli import database, pubsub


def run_pulsecart(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `pulsecart` console entry point in a child process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CTX_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pulsecart_cli", *args], env=full_env,
                          capture_output=True, text=True, check=False, **kwargs)


def connect(url: str, **kwargs) -> psycopg.Connection:
    """A connection that finds pulsecart's tables as pulsecart's own sessions do (its schema, then public)."""
    return psycopg.connect(url, options=database.libpq_options(), **kwargs)


def insert_events(conn, rows):
    """rows: (user_id, event_type, timestamp[, payload]). Returns the event ids."""
    ids = []
    with conn.cursor() as cur:
        for row in rows:
            user_id, event_type, timestamp, *rest = row
            payload = rest[0] if rest else {}
            event_id = uuid.uuid4()
            ids.append(event_id)
            cur.execute(
                "INSERT INTO events (event_id, user_id, event_type, timestamp, payload) VALUES (%s, %s, %s, %s, %s)",
                (event_id, user_id, event_type, timestamp, json.dumps(payload)),
            )
    return ids


def history_begins(conn, day: date = date(2025, 2, 1)) -> None:
    """One event on ``day``: the days after it are in the history (never run: missing), not before it."""
    insert_events(conn, [("history-begins", "product.viewed", datetime.combine(day, datetime.min.time(), UTC))])


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def interrupt_when_running(conn, db_url: str, *args, running: int = 1, sig: int = signal.SIGINT,
                           sleeping: int = 0) -> subprocess.CompletedProcess:
    """Start `pulsecart *args`, send ``sig`` (Ctrl-C) once ``running`` ledger rows are running and
    ``sleeping`` server sessions are inside pg_sleep (mid-statement), wait for the exit."""
    process = subprocess.Popen([sys.executable, "-m", "pulsecart_cli", *args],
                               env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while conn.execute("SELECT count(*) FROM job_runs WHERE status = 'running'").fetchone()[0] < running \
            or sleeping_sessions(conn) < sleeping:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(sig)
    out, err = process.communicate(timeout=20)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def sleeping_sessions(conn) -> int:
    """Server sessions of this database inside pg_sleep (a slow statement a test injected)."""
    return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event = 'PgSleep'").fetchone()[0]


# --- the jobs' tables, and triggers that make a day slow or fail ---------------------------------------

D = date(2025, 3, 3)


def aggregates(conn, day=D):
    rows = conn.execute(
        "SELECT user_id, event_type, event_count FROM event_aggregates WHERE date = %s ORDER BY 1, 2", (day,))
    return {(u, t): n for u, t, n in rows}


def history(conn, as_of):
    return dict(conn.execute(
        "SELECT user_id, score FROM personalization_score_history WHERE as_of = %s", (as_of,)).fetchall())


def all_history(conn):
    rows = conn.execute("SELECT as_of, user_id, score FROM personalization_score_history ORDER BY 1, 2")
    return {(as_of, user): score for as_of, user, score in rows}


def scores_by_definition(conn):
    """Score as of D: the weighted counts of D-6 .. D, for every aggregated day D."""
    rows = conn.execute("""
        SELECT d.day, a.user_id, sum(a.event_count * event_weight(a.event_type))
        FROM aggregated_days d JOIN event_aggregates a ON a.date BETWEEN d.day - 6 AND d.day
        GROUP BY 1, 2""")
    return {(as_of, user): score for as_of, user, score in rows}


def metrics_row(conn, day=D):
    return conn.execute(
        "SELECT orders_placed, carts_abandoned, abandonment_rate, revenue, invalid_order_totals"
        " FROM daily_metrics WHERE date = %s", (day,)).fetchone()


def fail_metrics_on(day: str, name: str) -> str:
    """SQL that makes the metrics of ``day`` fail ('injected failure for <day>'): a trigger named ``name``."""
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.date = DATE '{day}' THEN RAISE EXCEPTION 'injected failure for %', NEW.date; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER {name} BEFORE INSERT ON daily_metrics FOR EACH ROW EXECUTE FUNCTION {name}();
"""


FAIL_ON_MARCH_3 = fail_metrics_on("2025-03-03", "fail_on_march_3")


SLOW_METRICS = """
CREATE FUNCTION slow_metrics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$;
CREATE TRIGGER slow_metrics BEFORE INSERT ON daily_metrics FOR EACH ROW EXECUTE FUNCTION slow_metrics();
"""


def slow_the_first_time(name: str, seconds: int, trigger: str, returns: str = "NEW") -> str:
    """A trigger ``name`` that sleeps ``seconds`` the first time it fires only: a sequence is not rolled
    back, so a retry of the same statement runs at full speed. ``trigger``: what follows BEFORE."""
    return f"""
CREATE SEQUENCE {name}_calls;
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('{name}_calls') = 1 THEN PERFORM pg_sleep({seconds}); END IF;
    RETURN {returns};
END $$;
CREATE TRIGGER {name} BEFORE {trigger} EXECUTE FUNCTION {name}();
"""


# --- windows: marked days, the ledger ------------------------------------------------------------------

WINDOW = "2025-03-01..2025-03-05"


MARKER = ("marker", "product.viewed", 42)  # a stored row no rerun would keep: present = day untouched


SLOW_THEN_FAIL_ON = """
CREATE FUNCTION slow_day() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.date = DATE '{day}' THEN
        PERFORM pg_sleep({seconds});
        IF {fail} THEN RAISE EXCEPTION 'injected failure for %', NEW.date; END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER slow_day BEFORE INSERT ON event_aggregates FOR EACH ROW EXECUTE FUNCTION slow_day();
"""


def five_days_with_markers(conn):
    insert_events(conn, [(u, "product.viewed", utc(2025, 3, d, 12), {}) for d in range(1, 6) for u in "ab"])
    for d in range(1, 6):
        conn.execute("INSERT INTO event_aggregates (date, user_id, event_type, event_count) VALUES (%s, %s, %s, %s)",
                     (date(2025, 3, d), *MARKER))


def has_marker(conn, day):
    return (MARKER[0], MARKER[1]) in aggregates(conn, day)


def runs(conn):
    return conn.execute("SELECT run_date, status, error FROM job_runs ORDER BY run_date").fetchall()


# --- Pub/Sub: one topic pair, publishing dead letters, draining a subscription --------------------------

PAIR = pubsub.TopicPair("commerce-events")


def add_watcher(clients, name="watch"):
    path = clients.subscription_path(f"{name}-{PAIR.original}")
    clients.subscriber.create_subscription(
        request={"name": path, "topic": clients.topic_path(PAIR.original), "enable_message_ordering": True})
    return path


def publish_dead_letters(clients, messages):
    """messages: (data, attributes, ordering_key). Publishes to the dead-letter topic; returns message ids."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True))
    topic = clients.topic_path(PAIR.dead_letter)
    futures = [publisher.publish(topic, data, ordering_key=key, **attrs) for data, attrs, key in messages]
    return [f.result(timeout=30) for f in futures]


def drain(clients, subscription, timeout=1.5):
    """Pull and ack everything on a subscription."""
    from google.api_core import exceptions as gexc

    received = []
    while True:
        try:
            response = clients.subscriber.pull(request={"subscription": subscription, "max_messages": 1000},
                                               timeout=timeout, retry=None)
        except gexc.DeadlineExceeded:
            break
        if not response.received_messages:
            break
        received.extend(response.received_messages)
        clients.subscriber.acknowledge(request={"subscription": subscription,
                                                "ack_ids": [m.ack_id for m in response.received_messages]})
    return [m.message for m in received]


def event(i, **extra):
    return json.dumps({"event_type": "order.placed", "event_id": f"e{i}", "user_id": f"u{i % 7}"} | extra).encode()


# --- Airflow: the DAG folder, the CLI next to this Python, connections as URIs ------------------------------

DAGS = Path(__file__).resolve().parents[1] / "dags"
AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow_uri(conninfo: str) -> str:
    """A libpq conninfo as the URI an Airflow connection takes (sockets go in ?host=)."""
    if "://" in conninfo:
        return conninfo
    parts = conninfo_to_dict(conninfo)
    user = quote(parts.get("user", ""), safe="")
    password = quote(parts.get("password", ""), safe="")
    host = parts.get("host", "")
    port = f":{parts['port']}" if parts.get("port") and not host.startswith("/") else ""
    auth = f"{user}:{password}@" if password else f"{user}@"
    if host.startswith("/"):
        return f"postgresql://{auth}/{parts['dbname']}?host={quote(host, safe='')}"
    return f"postgresql://{auth}{host}{port}/{parts['dbname']}"


def body(message) -> str:
    """A message's text (the alerts send one HTML <pre> block), unescaped."""
    import html
    import re

    part = message.get_body(preferencelist=("html", "plain"))
    return html.unescape(re.sub(r"</?pre>", "", part.get_content()))


class CuttingProxy:
    """A TCP proxy in front of the test server's socket that, once armed, cuts the connection whose
    client sends the next COMMIT: after passing it on (``when="after"``: the server commits, the client
    never hears) or instead of it (``when="before"``: the server rolls back). With ``refuse_after``,
    it accepts no connection after the cut (the database looks gone). ``when="hold"`` cuts nothing: it
    passes the COMMIT on and holds the server's answer (``holding`` is set) until ``release()``."""

    def __init__(self, server_url: str):
        params = conninfo_to_dict(server_url)
        self.target = f"{params['host']}/.s.PGSQL.{params.get('port', 5432)}"
        self.dbname = params["dbname"]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.armed: str | None = None
        self.refuse_after = False
        self.cut = threading.Event()
        self.holding, self._released = threading.Event(), threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.listener.getsockname()[1]}/{self.dbname}?sslmode=disable"

    def arm(self, when: str, refuse_after: bool = False) -> None:
        self.refuse_after, self.armed = refuse_after, when

    def release(self) -> None:
        self._released.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set() and self.refuse_after:
                client.close()
                continue
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.target)
            cutting = threading.Event()  # this connection's: nothing more reaches its client
            held = threading.Event()  # this connection's: its next answer waits for release()
            threading.Thread(target=self._pipe, args=(client, server, cutting, held, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, cutting, held, False), daemon=True).start()

    def _pipe(self, source, sink, cutting: threading.Event, held: threading.Event, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self.armed == "hold" and not self.cut.is_set() and b"COMMIT\x00" in data:
                    self.cut.set()
                    held.set()
                elif from_client and self.armed and not self.cut.is_set() and b"COMMIT\x00" in data:
                    cutting.set()
                    self.cut.set()
                    if self.armed == "after":
                        sink.sendall(data)
                        time.sleep(0.5)  # the server commits; its answer is never passed on
                    break
                if cutting.is_set():
                    break
                if held.is_set() and not from_client:
                    self.holding.set()
                    self._released.wait(30)
                    held.clear()
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self.listener.close()
