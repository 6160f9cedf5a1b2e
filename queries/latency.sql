-- latency: per hop, percentiles of the seconds an expected bus event took (Zendesk -> bus log, bus -> sink, end to
-- end). The percentiles are quantile_cont's (linear between the two values around (n - 1) * q), found from each hop's
-- distinct values and their counts (latency_values.sql) rather than by holding every value. Same figures as
-- quantile_cont (to the last bit on the 1 M bench day; within one unit in the last place at 10 M).
CREATE OR REPLACE TABLE latency AS
WITH counted AS (
    SELECT hop, ord, s, n FROM latency_values
), ranked AS (
    -- the values of ranks below .. below + n - 1 (0-based, ascending) are s
    SELECT hop, s, sum(n) OVER (PARTITION BY hop ORDER BY s ROWS UNBOUNDED PRECEDING) - n AS below, n
    FROM counted WHERE s IS NOT NULL
), totals AS (
    SELECT hop, ord, coalesce(sum(n) FILTER (WHERE s IS NOT NULL), 0)::BIGINT AS events, max(s) AS max
    FROM counted GROUP BY hop, ord
), wanted AS (
    SELECT hop, i, (events - 1) * q AS h
    FROM totals, (SELECT unnest([0.5, 0.95, 0.99]::DOUBLE[]) AS q, unnest([1, 2, 3]) AS i)
    WHERE events > 0
), at_rank AS (
    SELECT w.hop, w.i, w.h, lo.s AS lo, hi.s AS hi
    FROM wanted w
    JOIN ranked lo ON lo.hop = w.hop AND floor(w.h) >= lo.below AND floor(w.h) < lo.below + lo.n
    JOIN ranked hi ON hi.hop = w.hop AND ceil(w.h) >= hi.below AND ceil(w.h) < hi.below + hi.n
), q AS (
    SELECT hop, list(lo + (hi - lo) * (h - floor(h)) ORDER BY i) AS q FROM at_rank GROUP BY hop
)
SELECT t.hop, t.events, q.q[1] AS p50, q.q[2] AS p95, q.q[3] AS p99, t.max
FROM totals t LEFT JOIN q USING (hop)
ORDER BY t.ord;
