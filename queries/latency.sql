-- latency: per hop, percentiles of the seconds an event took (Zendesk -> bus log, bus -> sink, end to end).
CREATE OR REPLACE TABLE latency AS
WITH l AS (
    SELECT 'zendesk_to_bus' AS hop, 1 AS ord, bus_latency_s AS s FROM verdicts
    UNION ALL SELECT 'bus_to_sink', 2, sink_latency_s FROM verdicts
    UNION ALL SELECT 'end_to_end', 3, end_to_end_s FROM verdicts
)
SELECT hop, count(s) AS events,
       quantile_cont(s, 0.5) AS p50, quantile_cont(s, 0.95) AS p95, quantile_cont(s, 0.99) AS p99, max(s) AS max
FROM l
GROUP BY hop, ord
ORDER BY ord;
