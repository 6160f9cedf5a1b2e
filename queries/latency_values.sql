-- latency_values: per hop (Zendesk -> bus log, bus -> sink, end to end; `ord` orders them), each latency in seconds an
-- expected bus event took (children the emission model folds share their event's latencies: counted once), with how
-- many took it (`n`; `s` NULL: how many have none). latency.sql's percentiles and latency_histogram.sql's buckets are
-- both found from it: one scan of the day's verdicts for the two, and distinct values rather than every value (at
-- 100 M events three hops' values would not fit in the engine's memory, their distinct values do: milliseconds over
-- hours).
CREATE OR REPLACE TABLE latency_values AS
SELECT CASE name WHEN 'bus_latency_s' THEN 'zendesk_to_bus' WHEN 'sink_latency_s' THEN 'bus_to_sink'
                 ELSE 'end_to_end' END AS hop,
       CASE name WHEN 'bus_latency_s' THEN 1 WHEN 'sink_latency_s' THEN 2 ELSE 3 END AS ord,
       s, count(*) AS n
FROM (SELECT bus_latency_s, sink_latency_s, end_to_end_s FROM verdicts WHERE source_id = expected_id)
     UNPIVOT INCLUDE NULLS (s FOR name IN (bus_latency_s, sink_latency_s, end_to_end_s))
GROUP BY ALL;
