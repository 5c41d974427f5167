"""A database built the seed's way (shared/seed/airflow-batch-workflows.md), as production has it: the
consumer's events table with columns and indexes of its own, and the three tables the seed's DAGs wrote,
filled by the seed's own statements (the day bound instead of CURRENT_DATE). No pulsecart in sight."""

from datetime import date, timedelta

from pulsecart_cli.seed import SeedSpec, day_rows

EVENTS_PLAIN = """
CREATE TABLE events (
    event_id     uuid PRIMARY KEY,
    user_id      varchar(64) NOT NULL,
    event_type   varchar(64) NOT NULL,
    "timestamp"  timestamptz NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    source_topic text,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_user_idx ON events (user_id);
"""

# Declarative range partitions on "timestamp", one per day (the primary key has to include it).
EVENTS_PARTITIONED = """
CREATE TABLE events (
    event_id     uuid NOT NULL,
    user_id      varchar(64) NOT NULL,
    event_type   varchar(64) NOT NULL,
    "timestamp"  timestamptz NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    source_topic text,
    PRIMARY KEY (event_id, "timestamp")
) PARTITION BY RANGE ("timestamp");
"""

OUTPUTS = """
CREATE TABLE event_aggregates (
    user_id     varchar(64) NOT NULL,
    date        date NOT NULL,
    event_type  varchar(64) NOT NULL,
    event_count integer NOT NULL,
    PRIMARY KEY (user_id, date, event_type)
);
CREATE TABLE personalization_scores (
    user_id     varchar(64) PRIMARY KEY,
    score       numeric NOT NULL,
    computed_at timestamptz NOT NULL
);
CREATE TABLE daily_metrics (
    date             date PRIMARY KEY,
    orders_placed    integer,
    carts_abandoned  integer,
    abandonment_rate numeric(5, 2),
    revenue          numeric(12, 2)
);
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pulsecart_app') THEN CREATE ROLE pulsecart_app; END IF;
END $$;
GRANT SELECT ON personalization_scores TO pulsecart_app;
"""

# The seed's three statements, with the processed day as a parameter (they used CURRENT_DATE - 1).
SEED_AGGREGATE = """
INSERT INTO event_aggregates (user_id, date, event_type, event_count)
SELECT user_id, DATE(timestamp) AS date, event_type, COUNT(*) AS event_count
FROM events WHERE DATE(timestamp) = %(day)s
GROUP BY user_id, DATE(timestamp), event_type
ON CONFLICT (user_id, date, event_type) DO UPDATE SET event_count = EXCLUDED.event_count
"""
SEED_SCORES = """
INSERT INTO personalization_scores (user_id, score, computed_at)
SELECT user_id,
       SUM(CASE WHEN event_type = 'order.placed' THEN event_count * 10 ELSE 0 END) +
       SUM(CASE WHEN event_type = 'cart.item_added' THEN event_count * 3 ELSE 0 END) +
       SUM(CASE WHEN event_type = 'product.viewed' THEN event_count * 1 ELSE 0 END) AS score,
       NOW() AS computed_at
FROM event_aggregates WHERE date >= %(day)s::date - 6
GROUP BY user_id
ON CONFLICT (user_id) DO UPDATE SET score = EXCLUDED.score, computed_at = EXCLUDED.computed_at
"""
SEED_METRICS = """
INSERT INTO daily_metrics (date, orders_placed, carts_abandoned, abandonment_rate, revenue)
SELECT %(day)s::date,
       COUNT(*) FILTER (WHERE event_type = 'order.placed'),
       COUNT(*) FILTER (WHERE event_type = 'cart.abandoned'),
       ROUND(COUNT(*) FILTER (WHERE event_type = 'cart.abandoned')::numeric /
             NULLIF(COUNT(*) FILTER (WHERE event_type = 'cart.item_added'), 0) * 100, 2),
       SUM(CASE WHEN payload->>'total' ~ '^[0-9]+(\\.[0-9]+)?$' THEN (payload->>'total')::numeric END)
           FILTER (WHERE event_type = 'order.placed')
FROM events WHERE DATE(timestamp) = %(day)s
ON CONFLICT (date) DO UPDATE SET orders_placed = EXCLUDED.orders_placed,
    carts_abandoned = EXCLUDED.carts_abandoned, abandonment_rate = EXCLUDED.abandonment_rate,
    revenue = EXCLUDED.revenue
"""


def build(conn, spec: SeedSpec, *, partitioned: bool = False, seed_dag_days: int = 0) -> None:
    """The seed's schema with ``spec``'s events in it (written as the consumer would: the seed's columns
    only), and the seed's DAGs run for its first ``seed_dag_days`` days. ``conn``: autocommit, UTC."""
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(EVENTS_PARTITIONED if partitioned else EVENTS_PLAIN)
    if partitioned:
        for offset in range(-1, spec.days + 10):
            add_partition(conn, spec.start + timedelta(days=offset))
    conn.execute(OUTPUTS)
    with conn.cursor() as cur, cur.copy(
            'COPY events (event_id, user_id, event_type, "timestamp", payload) FROM STDIN') as copy:
        for offset in range(spec.days):
            for line, _ in day_rows(spec, spec.start + timedelta(days=offset)):
                copy.write(line)
    for offset in range(seed_dag_days):
        day = spec.start + timedelta(days=offset)
        for statement in (SEED_AGGREGATE, SEED_SCORES, SEED_METRICS):
            conn.execute(statement, {"day": day})


def add_partition(conn, day: date) -> None:
    conn.execute(f"CREATE TABLE events_{day:%Y%m%d} PARTITION OF events "
                 f"FOR VALUES FROM ('{day}') TO ('{day + timedelta(days=1)}')")


def app_scores(conn):
    """What the app reads."""
    return conn.execute("SELECT user_id, score, computed_at FROM public.personalization_scores ORDER BY 1").fetchall()
