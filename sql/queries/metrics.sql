-- name: replace_day
-- One row per UTC day. Order totals that are missing, not a valid total (order_total(), migration 0004),
-- or beyond what numeric holds are left out of revenue and counted in invalid_order_totals.
-- Returns the day's change count in the snapshot that read its events (0002_event_change_tracking.sql).
WITH written AS (
INSERT INTO daily_metrics (date, orders_placed, carts_abandoned, abandonment_rate, revenue, invalid_order_totals)
SELECT %(day)s::date,
       count(*) FILTER (WHERE event_type = 'order.placed'),
       count(*) FILTER (WHERE event_type = 'cart.abandoned'),
       round(count(*) FILTER (WHERE event_type = 'cart.abandoned')::numeric
             / NULLIF(count(*) FILTER (WHERE event_type = 'cart.item_added'), 0) * 100, 2),
       coalesce(sum(total), 0),
       count(*) FILTER (WHERE event_type = 'order.placed' AND total IS NULL)
FROM (
    SELECT event_type,
           order_total(total_text) AS total
    FROM (
        SELECT event_type, CASE WHEN event_type = 'order.placed' THEN payload ->> 'total' END AS total_text
        FROM events
        WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
    ) AS day_rows
) AS day_events
ON CONFLICT (date) DO UPDATE SET
    orders_placed        = EXCLUDED.orders_placed,
    carts_abandoned      = EXCLUDED.carts_abandoned,
    abandonment_rate     = EXCLUDED.abandonment_rate,
    revenue              = EXCLUDED.revenue,
    invalid_order_totals = EXCLUDED.invalid_order_totals
RETURNING orders_placed, carts_abandoned, abandonment_rate, revenue, invalid_order_totals
)
SELECT written.*, (SELECT changes FROM event_changes_between(%(day)s, %(day)s)) FROM written;

-- name: forget_day
WITH removed AS (DELETE FROM daily_metrics WHERE date = %(day)s RETURNING 1)
SELECT count(*) FROM removed;
