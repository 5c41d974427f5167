-- name: replace_day
-- One row per UTC day. Order totals that are missing or not a number are left out of revenue
-- and counted in invalid_order_totals.
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
           CASE WHEN event_type = 'order.placed'
                 AND payload ->> 'total' ~ '^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$'
                THEN (payload ->> 'total')::numeric
           END AS total
    FROM events
    WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
) AS day_events
ON CONFLICT (date) DO UPDATE SET
    orders_placed        = EXCLUDED.orders_placed,
    carts_abandoned      = EXCLUDED.carts_abandoned,
    abandonment_rate     = EXCLUDED.abandonment_rate,
    revenue              = EXCLUDED.revenue,
    invalid_order_totals = EXCLUDED.invalid_order_totals
RETURNING orders_placed, carts_abandoned, abandonment_rate, revenue, invalid_order_totals;
