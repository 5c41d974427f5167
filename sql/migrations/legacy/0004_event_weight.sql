-- How much one event of a kind adds to a personalization score; one definition for every statement.
-- A single SQL expression, so the planner inlines it: it costs what the CASE costs.
CREATE FUNCTION event_weight(event_type text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE event_type
           WHEN 'order.placed' THEN 10
           WHEN 'cart.item_added' THEN 3
           WHEN 'product.viewed' THEN 1
           ELSE 0
       END;
