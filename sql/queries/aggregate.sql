-- name: delete_day
DELETE FROM event_aggregates WHERE date = %(day)s;

-- name: insert_day
-- One UTC day as a half-open range on the indexed timestamp column; rows go in key order.
INSERT INTO event_aggregates (date, user_id, event_type, event_count)
SELECT %(day)s::date, user_id, event_type, count(*)
FROM events
WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
GROUP BY user_id, event_type
ORDER BY user_id, event_type;

-- name: delete_history
DELETE FROM personalization_score_history WHERE as_of = %(day)s;

-- name: insert_history
-- Score as of D: 10 x orders + 3 x items added + 1 x views over the seven days D-6 .. D.
INSERT INTO personalization_score_history (as_of, user_id, score, computed_at)
SELECT %(day)s::date,
       user_id,
       sum(event_count * CASE event_type
                             WHEN 'order.placed' THEN 10
                             WHEN 'cart.item_added' THEN 3
                             WHEN 'product.viewed' THEN 1
                             ELSE 0
                         END),
       now()
FROM event_aggregates
WHERE date BETWEEN %(day)s::date - 6 AND %(day)s::date
GROUP BY user_id
ORDER BY user_id;

-- name: lock_current_as_of
SELECT as_of FROM personalization_scores_state FOR UPDATE;

-- name: delete_current
DELETE FROM personalization_scores;

-- name: insert_current
INSERT INTO personalization_scores (user_id, score, computed_at, as_of)
SELECT user_id, score, computed_at, as_of
FROM personalization_score_history
WHERE as_of = %(day)s;

-- name: set_current_as_of
UPDATE personalization_scores_state SET as_of = %(day)s;
