-- What `pulsecart seed` loaded: it loads only into an empty events table or one it seeded itself.
CREATE TABLE seed_loads (
    id        bigserial PRIMARY KEY,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    first_day date NOT NULL,
    days      integer NOT NULL,
    seed      bigint NOT NULL,
    events    bigint NOT NULL
);

-- When `pulsecart prune` removed the scores as of a day (a rerun of the day rebuilds them).
ALTER TABLE aggregated_days ADD COLUMN scores_pruned_at timestamptz;
