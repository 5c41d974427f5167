-- Finding late-arriving events (ingested after a day's last successful run) without scanning the day.
CREATE INDEX events_ingested_at_idx ON events (ingested_at);
