-- name: insert
-- A redelivered message is stored once.
INSERT INTO dead_letter_quarantine
    (dead_letter_topic, original_topic, message_id, data, attributes, ordering_key, publish_time, reason)
VALUES (%(dead_letter_topic)s, %(original_topic)s, %(message_id)s, %(data)s, %(attributes)s,
        %(ordering_key)s, %(publish_time)s, %(reason)s)
ON CONFLICT (dead_letter_topic, message_id) DO NOTHING;

-- name: list
SELECT id, original_topic, message_id, reason, status, quarantined_at, length(data) AS size
FROM dead_letter_quarantine
WHERE (%(topic)s::text IS NULL OR original_topic = %(topic)s)
  AND (%(reason)s::text IS NULL OR reason ILIKE '%%' || %(reason)s || '%%')
  AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: get
SELECT id, dead_letter_topic, original_topic, message_id, data, attributes, ordering_key, publish_time,
       reason, quarantined_at, status, status_changed_at, status_note, replayed_message_id
FROM dead_letter_quarantine
WHERE id = ANY(%(ids)s)
ORDER BY id;

-- name: mark_replayed
UPDATE dead_letter_quarantine
SET status = 'replayed', status_changed_at = now(), replayed_message_id = %(replayed_message_id)s,
    status_note = %(note)s
WHERE id = %(id)s;

-- name: mark_discarded
UPDATE dead_letter_quarantine
SET status = 'discarded', status_changed_at = now(), status_note = %(note)s
WHERE id = ANY(%(ids)s) AND status = 'quarantined'
RETURNING id;
