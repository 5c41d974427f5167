-- Each table's slice for day D is replaced exactly, by difference: one full join of the fresh rows
-- with the stored ones finds the rows that no longer occur (deleted), changed (updated) and new
-- (inserted). A rerun on unchanged data writes nothing. Each statement returns
-- (fresh rows, deleted, updated, inserted).

-- name: set_work_mem
-- The day's groupings and joins (a few hundred thousand rows) fit in memory instead of spilling:
-- measured 15-25 percent faster at 1M events a day. Lasts until the transaction ends.
SET LOCAL work_mem = '64MB';

-- name: replace_counts
WITH fresh AS MATERIALIZED (
    -- One UTC day as a half-open range on the indexed timestamp column.
    SELECT user_id, event_type, count(*) AS event_count
    FROM events
    WHERE "timestamp" >= %(start)s AND "timestamp" < %(end)s
    GROUP BY user_id, event_type
), diff AS MATERIALIZED (
    SELECT coalesce(f.user_id, s.user_id) AS user_id, coalesce(f.event_type, s.event_type) AS event_type,
           f.event_count AS new_count, s.event_count AS old_count
    FROM fresh f
    FULL JOIN (SELECT user_id, event_type, event_count FROM event_aggregates WHERE date = %(day)s) s
           ON s.user_id = f.user_id AND s.event_type = f.event_type
    WHERE f.event_count IS DISTINCT FROM s.event_count
), deleted AS (
    DELETE FROM event_aggregates a USING diff d
    WHERE a.date = %(day)s AND a.user_id = d.user_id AND a.event_type = d.event_type AND d.new_count IS NULL
    RETURNING 1
), updated AS (
    UPDATE event_aggregates a SET event_count = d.new_count FROM diff d
    WHERE a.date = %(day)s AND a.user_id = d.user_id AND a.event_type = d.event_type
      AND d.new_count IS NOT NULL AND d.old_count IS NOT NULL
    RETURNING 1
), inserted AS (
    INSERT INTO event_aggregates (date, user_id, event_type, event_count)
    SELECT %(day)s::date, user_id, event_type, new_count FROM diff WHERE old_count IS NULL
    ORDER BY user_id, event_type
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM deleted), (SELECT count(*) FROM updated),
       (SELECT count(*) FROM inserted);

-- name: replace_history
WITH fresh AS MATERIALIZED (
    -- Score as of D: 10 x orders + 3 x items added + 1 x views over the seven days D-6 .. D.
    SELECT user_id,
           sum(event_count * CASE event_type
                                 WHEN 'order.placed' THEN 10
                                 WHEN 'cart.item_added' THEN 3
                                 WHEN 'product.viewed' THEN 1
                                 ELSE 0
                             END) AS score
    FROM event_aggregates
    WHERE date BETWEEN %(day)s::date - 6 AND %(day)s::date
    GROUP BY user_id
), diff AS MATERIALIZED (
    SELECT coalesce(f.user_id, s.user_id) AS user_id, f.score AS new_score, s.score AS old_score
    FROM fresh f
    FULL JOIN (SELECT user_id, score FROM personalization_score_history WHERE as_of = %(day)s) s
           ON s.user_id = f.user_id
    WHERE f.score IS DISTINCT FROM s.score
), deleted AS (
    DELETE FROM personalization_score_history h USING diff d
    WHERE h.as_of = %(day)s AND h.user_id = d.user_id AND d.new_score IS NULL
    RETURNING 1
), updated AS (
    UPDATE personalization_score_history h SET score = d.new_score, computed_at = now() FROM diff d
    WHERE h.as_of = %(day)s AND h.user_id = d.user_id AND d.new_score IS NOT NULL AND d.old_score IS NOT NULL
    RETURNING 1
), inserted AS (
    INSERT INTO personalization_score_history (as_of, user_id, score, computed_at)
    SELECT %(day)s::date, user_id, new_score, now() FROM diff WHERE old_score IS NULL
    ORDER BY user_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM deleted), (SELECT count(*) FROM updated),
       (SELECT count(*) FROM inserted);

-- name: lock_current_as_of
SELECT as_of FROM personalization_scores_state FOR UPDATE;

-- name: replace_current
-- The app-facing scores become exactly the history as of D.
WITH fresh AS MATERIALIZED (
    SELECT user_id, score FROM personalization_score_history WHERE as_of = %(day)s
), diff AS MATERIALIZED (
    SELECT coalesce(f.user_id, c.user_id) AS user_id, f.score AS new_score, c.user_id IS NOT NULL AS present
    FROM fresh f
    FULL JOIN personalization_scores c ON c.user_id = f.user_id
    WHERE f.score IS DISTINCT FROM c.score OR c.as_of IS DISTINCT FROM %(day)s
), deleted AS (
    DELETE FROM personalization_scores c USING diff d
    WHERE c.user_id = d.user_id AND d.new_score IS NULL
    RETURNING 1
), updated AS (
    UPDATE personalization_scores c SET score = d.new_score, as_of = %(day)s, computed_at = now() FROM diff d
    WHERE c.user_id = d.user_id AND d.new_score IS NOT NULL AND d.present
    RETURNING 1
), inserted AS (
    INSERT INTO personalization_scores (user_id, score, computed_at, as_of)
    SELECT user_id, new_score, now(), %(day)s::date FROM diff WHERE NOT present
    ORDER BY user_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM deleted), (SELECT count(*) FROM updated),
       (SELECT count(*) FROM inserted);

-- name: set_current_as_of
UPDATE personalization_scores_state SET as_of = %(day)s;
