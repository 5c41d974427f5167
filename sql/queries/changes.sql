-- name: fold
-- Folds the change rows the consumer's triggers wrote into per-day totals, so that readers count few rows.
SELECT fold_event_changes();
