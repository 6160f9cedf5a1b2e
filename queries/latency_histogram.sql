-- latency_histogram: per hop (as in latency.sql, per expected bus event), how many events took how long, in fixed
-- buckets from under 100 ms to over an hour; every bucket is listed (zero when empty) so charts of different runs line
-- up. The buckets' bounds are stated once (`buckets`); a latency's bucket is how many lower bounds it reaches, plus
-- one, counted by a GROUP BY (a range join of latencies to buckets costs ~7 times more at ten million events). NaN
-- counts as the largest.
CREATE OR REPLACE TABLE latency_histogram AS
WITH buckets(ord, label, lower_s, upper_s) AS (
    VALUES (1, '< 100 ms', NULL, 0.1), (2, '100 ms – 1 s', 0.1, 1.0), (3, '1 – 5 s', 1.0, 5.0),
           (4, '5 – 30 s', 5.0, 30.0), (5, '30 s – 2 min', 30.0, 120.0), (6, '2 – 15 min', 120.0, 900.0),
           (7, '15 – 60 min', 900.0, 3600.0), (8, '≥ 1 h', 3600.0, NULL)
), bounds AS (
    SELECT list(lower_s::DOUBLE ORDER BY ord) AS lower FROM buckets WHERE lower_s IS NOT NULL
), l AS (
    SELECT 'zendesk_to_bus' AS hop, bus_latency_s AS s FROM verdicts
    WHERE bus_latency_s IS NOT NULL AND source_id = expected_id
    UNION ALL SELECT 'bus_to_sink', sink_latency_s FROM verdicts
    WHERE sink_latency_s IS NOT NULL AND source_id = expected_id
    UNION ALL SELECT 'end_to_end', end_to_end_s FROM verdicts WHERE end_to_end_s IS NOT NULL AND source_id = expected_id
), counted AS (
    SELECT hop, 1 + len(list_filter(lower, lambda b: s >= b)) AS ord, count(*) AS events
    FROM l, bounds GROUP BY ALL
)
SELECT h.hop, b.ord, b.label, b.lower_s::DOUBLE AS lower_s, b.upper_s::DOUBLE AS upper_s,
       coalesce(c.events, 0) AS events
FROM hop_vocab h
CROSS JOIN buckets b
LEFT JOIN counted c ON c.hop = h.hop AND c.ord = b.ord
ORDER BY h.ord, b.ord;
