-- "Is this a valid order total" has one definition, used for the check and the cast alike: optional ASCII
-- blanks, an optional sign, ASCII digits with an optional point, an optional exponent. PostgreSQL's regex
-- \s would also match Unicode spaces (U+2003 …), which numeric's input refuses, and numeric's input accepts
-- what the pattern does not: Infinity and NaN, and 1_000 from PostgreSQL 16 on (revenue would then differ
-- between Cloud SQL 15 and 16). NULL: not a valid total (counted in invalid_order_totals). A short total
-- without an exponent always fits numeric; only the others pay for numeric_or_null's error handling.
-- One SQL expression: the planner inlines it.
CREATE FUNCTION order_total(total text) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN total ~ '^[ \t\n\r]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\n\r]*$' THEN
           CASE WHEN length(total) <= 30 AND total !~ '[eE]' THEN total::numeric ELSE numeric_or_null(total) END
       END;
