-- name: copy_events
COPY events (event_id, user_id, event_type, "timestamp", payload) FROM STDIN;

-- name: foreign_events
-- Events that pulsecart did not seed: some events, and no seed load recorded.
SELECT EXISTS (SELECT FROM events) AND NOT EXISTS (SELECT FROM seed_loads);

-- name: record_load
INSERT INTO seed_loads (first_day, days, seed, events) VALUES (%(first_day)s, %(days)s, %(seed)s, %(events)s);
