-- latency_histogram: per hop (as in latency.sql), how many events took how long, in fixed buckets from under 100 ms
-- to over an hour; every bucket is listed (zero when empty) so charts of different runs line up. Each latency is
-- given its bucket by one CASE and counted by a GROUP BY (a range join of latencies to buckets costs ~7 times more
-- at ten million events).
CREATE OR REPLACE TABLE latency_histogram AS
WITH l AS (
    SELECT 1 AS hop_ord, bus_latency_s AS s FROM verdicts WHERE bus_latency_s IS NOT NULL
    UNION ALL SELECT 2, sink_latency_s FROM verdicts WHERE sink_latency_s IS NOT NULL
    UNION ALL SELECT 3, end_to_end_s FROM verdicts WHERE end_to_end_s IS NOT NULL
), counted AS (
    SELECT hop_ord,
           CASE WHEN s < 0.1 THEN 1 WHEN s < 1.0 THEN 2 WHEN s < 5.0 THEN 3 WHEN s < 30.0 THEN 4
                WHEN s < 120.0 THEN 5 WHEN s < 900.0 THEN 6 WHEN s < 3600.0 THEN 7 WHEN s >= 3600.0 THEN 8 END AS ord,
           count(*) AS events
    FROM l GROUP BY ALL
), buckets(ord, label, lower_s, upper_s) AS (
    VALUES (1, '< 100 ms', NULL, 0.1), (2, '100 ms – 1 s', 0.1, 1.0), (3, '1 – 5 s', 1.0, 5.0),
           (4, '5 – 30 s', 5.0, 30.0), (5, '30 s – 2 min', 30.0, 120.0), (6, '2 – 15 min', 120.0, 900.0),
           (7, '15 – 60 min', 900.0, 3600.0), (8, '≥ 1 h', 3600.0, NULL)
), hops(hop, hop_ord) AS (
    VALUES ('zendesk_to_bus', 1), ('bus_to_sink', 2), ('end_to_end', 3)
)
SELECT h.hop, b.ord, b.label, b.lower_s::DOUBLE AS lower_s, b.upper_s::DOUBLE AS upper_s,
       coalesce(c.events, 0) AS events
FROM hops h
CROSS JOIN buckets b
LEFT JOIN counted c ON c.hop_ord = h.hop_ord AND c.ord = b.ord
ORDER BY h.hop_ord, b.ord;
