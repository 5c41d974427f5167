-- One day's events must not be able to fail the day's metrics.

-- The abandonment rate has no ceiling: 1,000 carts abandoned against 1 item added is 100,000 %.
ALTER TABLE daily_metrics ALTER COLUMN abandonment_rate TYPE numeric;

-- An order total as numeric, or NULL (counted in invalid_order_totals) when numeric cannot hold it
-- (1e400000, 1e-400000) or when it is so large that a day's sum of such totals could overflow
-- (numeric holds less than 1e131072; 2^63 totals below 1e131053 add up to less than that).
-- metrics.sql calls it only for long or exponent totals: catching an error costs a subtransaction.
CREATE FUNCTION numeric_or_null(total text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    value numeric;
BEGIN
    value := total::numeric;
    RETURN CASE WHEN abs(value) < 1e131053 THEN value END;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END $$;
