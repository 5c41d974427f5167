-- name: copy_events
COPY events (event_id, user_id, event_type, "timestamp", payload) FROM STDIN;
