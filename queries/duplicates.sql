-- duplicates: duplicated events by cause (redelivery, replay, re-batched), with the extra sink copies they made
-- and how many of those copies sit in files outside Spark's commit log.
CREATE OR REPLACE TABLE duplicates AS
SELECT cause, count(*) AS events, sum(sink_rows - 1)::BIGINT AS extra_copies,
       sum(uncommitted_rows)::BIGINT AS uncommitted_rows
FROM verdicts
WHERE verdict = 'duplicated' AND source_id = expected_id
GROUP BY cause
ORDER BY events DESC, cause;
