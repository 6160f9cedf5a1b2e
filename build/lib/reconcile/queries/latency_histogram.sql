-- latency_histogram: per hop (as in latency.sql), how many events took how long, in fixed buckets from under 100 ms
-- to over an hour; every bucket is listed (zero when empty) so charts of different runs line up.
CREATE OR REPLACE TABLE latency_histogram AS
WITH l AS (
    SELECT 'zendesk_to_bus' AS hop, 1 AS hop_ord, bus_latency_s AS s FROM verdicts
    UNION ALL SELECT 'bus_to_sink', 2, sink_latency_s FROM verdicts
    UNION ALL SELECT 'end_to_end', 3, end_to_end_s FROM verdicts
), buckets(ord, label, lower_s, upper_s) AS (
    VALUES (1, '< 100 ms', NULL, 0.1), (2, '100 ms – 1 s', 0.1, 1.0), (3, '1 – 5 s', 1.0, 5.0),
           (4, '5 – 30 s', 5.0, 30.0), (5, '30 s – 2 min', 30.0, 120.0), (6, '2 – 15 min', 120.0, 900.0),
           (7, '15 – 60 min', 900.0, 3600.0), (8, '≥ 1 h', 3600.0, NULL)
), hops(hop, hop_ord) AS (
    VALUES ('zendesk_to_bus', 1), ('bus_to_sink', 2), ('end_to_end', 3)
)
SELECT h.hop, b.ord, b.label, b.lower_s::DOUBLE AS lower_s, b.upper_s::DOUBLE AS upper_s,
       count(l.s) AS events
FROM hops h
CROSS JOIN buckets b
LEFT JOIN l ON l.hop = h.hop
           AND (b.lower_s IS NULL OR l.s >= b.lower_s)
           AND (b.upper_s IS NULL OR l.s < b.upper_s)
GROUP BY h.hop, h.hop_ord, b.ord, b.label, b.lower_s, b.upper_s
ORDER BY h.hop_ord, b.ord;
