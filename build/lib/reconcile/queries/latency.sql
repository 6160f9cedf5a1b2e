-- latency: per hop, percentiles of the seconds an event took (Zendesk -> bus log, bus -> sink, end to end).
CREATE OR REPLACE TABLE latency AS
WITH l AS (
    SELECT 'zendesk_to_bus' AS hop, 1 AS ord, bus_latency_s AS s FROM verdicts
    UNION ALL SELECT 'bus_to_sink', 2, sink_latency_s FROM verdicts
    UNION ALL SELECT 'end_to_end', 3, end_to_end_s FROM verdicts
)
SELECT hop, events, q[1] AS p50, q[2] AS p95, q[3] AS p99, max
FROM (
    -- one list of quantiles sorts each hop's values once, not three times
    SELECT hop, ord, count(s) AS events, quantile_cont(s, [0.5, 0.95, 0.99]) AS q, max(s) AS max
    FROM l
    GROUP BY hop, ord
)
ORDER BY ord;
