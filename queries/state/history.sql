-- history: loss per hop per window over past runs, with the window's pending events settled by later runs
-- folded in (a settled loss adds to its hop's loss; any settlement leaves the pending count), and the loss rate.
WITH settled AS (
    SELECT s.window_key,
           count(*) FILTER (WHERE s.verdict = 'lost_before_bus') AS lost_a,
           count(*) FILTER (WHERE s.verdict IN ('dead_lettered', 'lost_after_bus')) AS lost_b,
           count(*) FILTER (WHERE s.verdict IN ('delivered', 'duplicated', 'recovered')) AS delivered_b,
           count(*) FILTER (WHERE p.eb_id IS NULL) AS settled_a,
           count(*) AS settled
    FROM settlements s
    JOIN pending p USING (window_key, source_id)
    GROUP BY s.window_key
)
SELECT *, CASE WHEN "in" > 0 THEN lost / "in" ELSE 0.0 END AS loss_rate
FROM (
SELECT r.window_key, r.window_start, r.window_end, r.status, r.events, h.hop, h."in",
       h."out" + CASE WHEN h.hop = 'bus_to_sink' THEN coalesce(st.delivered_b, 0) ELSE 0 END AS "out",
       h.lost + CASE WHEN h.hop = 'zendesk_to_bus' THEN coalesce(st.lost_a, 0) ELSE coalesce(st.lost_b, 0) END
           AS lost,
       h.pending - CASE WHEN h.hop = 'zendesk_to_bus' THEN coalesce(st.settled_a, 0)
                        ELSE coalesce(st.settled, 0) - coalesce(st.settled_a, 0) END AS pending
FROM runs r
JOIN run_hops h USING (window_key)
LEFT JOIN settled st USING (window_key)
)
ORDER BY window_start, window_key, hop DESC;
