-- slices: cuts `export_in` (a result table being exported in event-time order) into event-time ranges of about
-- $rows rows each, so each range is sorted on its own within memory (engine.Engine.batches) and the ranges, taken in
-- order, give the rows in the same order as one sort of the whole table. Ranges start on whole seconds (a second's
-- rows never straddle two ranges, so ties stay together): a range holds under $rows rows besides its last second's.
-- One row per range: `lo` (inclusive; NULL for the rows without an event time, which sort last) and `hi`
-- (exclusive; NULL for the last range).
WITH seconds AS (
    SELECT date_trunc('second', event_time) AS second, count(*) AS n FROM export_in GROUP BY ALL
), numbered AS (
    SELECT second, (sum(n) OVER (ORDER BY second NULLS LAST ROWS UNBOUNDED PRECEDING) - n) // $rows AS slice
    FROM seconds
), ranges AS (
    SELECT slice, min(second) AS lo, bool_or(second IS NULL) AS holds_null FROM numbered GROUP BY slice
)
SELECT lo, lead(lo) OVER (ORDER BY slice) AS hi FROM ranges WHERE lo IS NOT NULL
UNION ALL
SELECT NULL, NULL FROM ranges WHERE holds_null
ORDER BY lo NULLS LAST;
