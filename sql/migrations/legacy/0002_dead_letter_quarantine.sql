-- Dead-lettered messages that cannot be republished, kept for a person to review.
CREATE TABLE dead_letter_quarantine (
    id                  bigserial PRIMARY KEY,
    dead_letter_topic   text NOT NULL,
    original_topic      text NOT NULL,
    message_id          text NOT NULL,
    data                bytea NOT NULL,
    attributes          jsonb NOT NULL DEFAULT '{}',
    ordering_key        text NOT NULL DEFAULT '',
    publish_time        timestamptz,
    reason              text NOT NULL,
    quarantined_at      timestamptz NOT NULL DEFAULT now(),
    status              text NOT NULL DEFAULT 'quarantined'
                        CHECK (status IN ('quarantined', 'replayed', 'discarded')),
    status_changed_at   timestamptz,
    status_note         text,
    replayed_message_id text,
    UNIQUE (dead_letter_topic, message_id)
);
CREATE INDEX dead_letter_quarantine_status_idx ON dead_letter_quarantine (status, original_topic);
