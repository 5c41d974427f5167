-- The seed's two statements (seed/airflow-batch-workflows.md, DAG 1) as written, with CURRENT_DATE
-- replaced by the run's date :run_date (= D + 1). Run with search_path seed_bench, public.
-- name: extract_events
INSERT INTO event_aggregates (user_id, date, event_type, event_count)
SELECT
    user_id,
    DATE(timestamp) AS date,
    event_type,
    COUNT(*) AS event_count
FROM events
WHERE DATE(timestamp) = %(run_date)s::date - INTERVAL '1 day'
GROUP BY user_id, DATE(timestamp), event_type
ON CONFLICT (user_id, date, event_type)
DO UPDATE SET event_count = EXCLUDED.event_count;

-- name: compute_scores
INSERT INTO personalization_scores (user_id, score, computed_at)
SELECT
    user_id,
    (
        SUM(CASE WHEN event_type = 'order.placed'   THEN event_count * 10 ELSE 0 END) +
        SUM(CASE WHEN event_type = 'cart.item_added' THEN event_count * 3  ELSE 0 END) +
        SUM(CASE WHEN event_type = 'product.viewed'  THEN event_count * 1  ELSE 0 END)
    ) AS score,
    NOW() AS computed_at
FROM event_aggregates
WHERE date >= %(run_date)s::date - INTERVAL '7 days'
GROUP BY user_id
ON CONFLICT (user_id)
DO UPDATE SET score = EXCLUDED.score, computed_at = EXCLUDED.computed_at;

-- name: daily_metrics
INSERT INTO daily_metrics (date, orders_placed, carts_abandoned, abandonment_rate, revenue)
SELECT
    %(run_date)s::date - INTERVAL '1 day'                                    AS date,
    COUNT(*) FILTER (WHERE event_type = 'order.placed')                AS orders_placed,
    COUNT(*) FILTER (WHERE event_type = 'cart.abandoned')              AS carts_abandoned,
    ROUND(
        COUNT(*) FILTER (WHERE event_type = 'cart.abandoned')::numeric /
        NULLIF(COUNT(*) FILTER (WHERE event_type = 'cart.item_added'), 0) * 100,
        2
    )                                                                   AS abandonment_rate,
    SUM((payload->>'total')::numeric) FILTER (WHERE event_type = 'order.placed') AS revenue
FROM events
WHERE DATE(timestamp) = %(run_date)s::date - INTERVAL '1 day'
ON CONFLICT (date)
DO UPDATE SET
    orders_placed    = EXCLUDED.orders_placed,
    carts_abandoned  = EXCLUDED.carts_abandoned,
    abandonment_rate = EXCLUDED.abandonment_rate,
    revenue          = EXCLUDED.revenue;

-- name: schema
-- The seed's tables, in a schema of their own so they never touch pulsecart's.
CREATE SCHEMA IF NOT EXISTS seed_bench;
CREATE TABLE IF NOT EXISTS seed_bench.event_aggregates (
    user_id text, date date, event_type text, event_count bigint, PRIMARY KEY (user_id, date, event_type));
CREATE TABLE IF NOT EXISTS seed_bench.personalization_scores (
    user_id text PRIMARY KEY, score bigint, computed_at timestamptz);
CREATE TABLE IF NOT EXISTS seed_bench.daily_metrics (
    date date PRIMARY KEY, orders_placed bigint, carts_abandoned bigint, abandonment_rate numeric, revenue numeric);

-- name: floor_counts
CREATE TEMP TABLE floor_counts AS
SELECT user_id, event_type, count(*) FROM events
WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s GROUP BY 1, 2;

-- name: floor_scores
CREATE TEMP TABLE floor_scores AS
SELECT user_id, sum(event_count * CASE event_type WHEN 'order.placed' THEN 10 WHEN 'cart.item_added' THEN 3
                                                  WHEN 'product.viewed' THEN 1 ELSE 0 END)
FROM event_aggregates WHERE date BETWEEN %(day)s::date - 6 AND %(day)s::date GROUP BY 1;

-- name: floor_window_counts
CREATE TEMP TABLE floor_window_counts AS
SELECT ("timestamp" AT TIME ZONE 'UTC')::date AS day, user_id, event_type, count(*) FROM events
WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s GROUP BY 1, 2, 3;

-- name: floor_window_scores
CREATE TEMP TABLE floor_window_scores AS
SELECT d.as_of, a.user_id, sum(a.event_count * CASE a.event_type WHEN 'order.placed' THEN 10
                                   WHEN 'cart.item_added' THEN 3 WHEN 'product.viewed' THEN 1 ELSE 0 END)
FROM generate_series(%(first)s::date, %(last)s::date, interval '1 day') AS d(as_of)
JOIN event_aggregates a ON a.date BETWEEN d.as_of::date - 6 AND d.as_of::date
GROUP BY 1, 2;

-- name: floor_metrics
SELECT count(payload ->> 'total'), count(event_type) FROM events
WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s;

-- name: clean_totals
-- The seed's metrics statement stops at the first total that is not a number; give day D clean totals.
UPDATE events SET payload = payload || '{"total": 0}'
WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s AND event_type = 'order.placed'
  AND NOT coalesce(payload ->> 'total' ~ '^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$', false);
