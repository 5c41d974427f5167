-- Events written by the Pub/Sub consumer; the jobs read one UTC day at a time.
CREATE TABLE events (
    event_id    uuid PRIMARY KEY,
    user_id     text NOT NULL,
    event_type  text NOT NULL,
    "timestamp" timestamptz NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}',
    ingested_at timestamptz NOT NULL DEFAULT now()
);
-- A one-day half-open range on timestamp is an index range scan; the included columns
-- let the aggregation read only the index.
CREATE INDEX events_timestamp_idx ON events ("timestamp") INCLUDE (user_id, event_type);

-- The seed's key is the set (user_id, date, event_type); leading with date makes
-- "replace one day" and "read seven days" range scans, and appends stay at the index's edge.
CREATE TABLE event_aggregates (
    user_id     text NOT NULL,
    date        date NOT NULL,
    event_type  text NOT NULL,
    event_count bigint NOT NULL,
    PRIMARY KEY (date, user_id, event_type)
);

CREATE TABLE personalization_scores (
    user_id     text PRIMARY KEY,
    score       bigint NOT NULL,
    computed_at timestamptz NOT NULL,
    as_of       date NOT NULL
);

CREATE TABLE personalization_score_history (
    user_id     text NOT NULL,
    as_of       date NOT NULL,
    score       bigint NOT NULL,
    computed_at timestamptz NOT NULL,
    PRIMARY KEY (as_of, user_id)
);

CREATE TABLE daily_metrics (
    date                 date PRIMARY KEY,
    orders_placed        bigint NOT NULL,
    carts_abandoned      bigint NOT NULL,
    abandonment_rate     numeric(7, 2),
    revenue              numeric NOT NULL,
    invalid_order_totals bigint NOT NULL DEFAULT 0
);

-- The run ledger: one row per attempt of any job, whoever started it.
CREATE TABLE job_runs (
    id             bigserial PRIMARY KEY,
    job            text NOT NULL,
    run_date       date,
    target         text,
    status         text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    trigger        text NOT NULL CHECK (trigger IN ('manual', 'airflow', 'cron')),
    airflow_run_id text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    rows_written   bigint,
    details        jsonb NOT NULL DEFAULT '{}',
    error          text,
    host           text NOT NULL,
    pid            integer,
    version        text NOT NULL
);
CREATE INDEX job_runs_job_date_idx ON job_runs (job, run_date, started_at DESC);
CREATE INDEX job_runs_running_idx ON job_runs (job) WHERE status = 'running';

-- The as-of date of personalization_scores: it only moves forward. A single row, locked
-- FOR UPDATE by the run that replaces the current scores.
CREATE TABLE personalization_scores_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    as_of     date
);
INSERT INTO personalization_scores_state (as_of) VALUES (NULL);
