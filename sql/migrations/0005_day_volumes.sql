-- How many events a day had when it was aggregated: check-complete compares a day's volume with the median
-- of the same weekday over the four weeks before, from these counts (cheap: one row a day). Days aggregated
-- before this migration have none until they are aggregated again.
ALTER TABLE aggregated_days ADD COLUMN events bigint;
