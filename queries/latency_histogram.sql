-- latency_histogram: per hop (latency_values.sql: per expected bus event), how many events took how long, in fixed
-- buckets from under 100 ms to over an hour, and below zero (a later store's record stamped before an earlier one's:
-- clocks apart, or the log copy written after the Kinesis arrival), shown as such, not as fast; every bucket is listed
-- (zero when empty) so charts of different runs line up. The buckets' bounds are stated once (`buckets`); a latency's
-- bucket is how many lower bounds it reaches, plus one, counted by a GROUP BY (a range join of latencies to buckets
-- costs ~7 times more at ten million events). NaN counts as the largest.
CREATE OR REPLACE TABLE latency_histogram AS
WITH buckets(ord, label, lower_s, upper_s) AS (
    VALUES (1, '< 0 (clocks apart)', NULL, 0.0), (2, '0 – 100 ms', 0.0, 0.1), (3, '100 ms – 1 s', 0.1, 1.0),
           (4, '1 – 5 s', 1.0, 5.0), (5, '5 – 30 s', 5.0, 30.0), (6, '30 s – 2 min', 30.0, 120.0),
           (7, '2 – 15 min', 120.0, 900.0), (8, '15 – 60 min', 900.0, 3600.0), (9, '≥ 1 h', 3600.0, NULL)
), bounds AS (
    SELECT list(lower_s::DOUBLE ORDER BY ord) AS lower FROM buckets WHERE lower_s IS NOT NULL
), counted AS (
    SELECT hop, 1 + len(list_filter(lower, lambda b: s >= b)) AS ord, sum(n)::BIGINT AS events
    FROM latency_values, bounds
    WHERE s IS NOT NULL
    GROUP BY ALL
)
SELECT h.hop, b.ord, b.label, b.lower_s::DOUBLE AS lower_s, b.upper_s::DOUBLE AS upper_s,
       coalesce(c.events, 0) AS events
FROM hop_vocab h
CROSS JOIN buckets b
LEFT JOIN counted c ON c.hop = h.hop AND c.ord = b.ord
ORDER BY h.ord, b.ord;
