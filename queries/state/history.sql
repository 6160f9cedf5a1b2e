-- history: loss per hop per window over past runs, with the window's pending events settled by later runs
-- folded in, so each hop still balances (in = out + lost + pending). A settled loss adds to the loss of the hop
-- queries/verdicts.csv names for its verdict, one the sink holds to bus_to_sink's out; a settlement leaves the
-- pending count of the hop it waited at (zendesk_to_bus when no id was linked to it). One that waited before the bus
-- and was found on it moves on: zendesk_to_bus out and bus_to_sink in; one found outside the funnel (unverified, not
-- emitted) leaves its hop's in. The loss rate, and the window's status as its figures now stand, are added by
-- State.history (emission.loss_rate, the one definition; `recorded`: the status its run recorded, `threshold`: the
-- hop's, NULL for a window recorded before the state kept it).
-- `recovered`: of the out, events the pipeline lost and `reconcile recover` made land, settled ones included (NULL for
-- a window recorded before the state kept the figure).
WITH settled_as AS (
    -- what later runs settled each pending event as: an event two overlapping windows left pending is settled once,
    -- under the earliest window's key (queries/state/carried.sql), and each window's figures take it
    SELECT source_id, arg_max(verdict, settled_in) AS verdict FROM settlements GROUP BY source_id
), settled AS (
    SELECT p.window_key,
           count(*) FILTER (WHERE v.loss_hop = 'zendesk_to_bus') AS lost_a,
           count(*) FILTER (WHERE v.loss_hop = 'bus_to_sink') AS lost_b,
           count(*) FILTER (WHERE v.reached_sink) AS delivered_b,
           count(*) FILTER (WHERE s.verdict = 'recovered') AS recovered_b,  -- in the sink: bus_to_sink's out
           count(*) FILTER (WHERE p.eb_id IS NULL) AS settled_a,
           count(*) FILTER (WHERE p.eb_id IS NULL AND v.in_funnel
                                  AND v.loss_hop IS DISTINCT FROM 'zendesk_to_bus') AS onto_bus,
           count(*) FILTER (WHERE p.eb_id IS NULL AND NOT v.in_funnel) AS left_a,
           count(*) FILTER (WHERE p.eb_id IS NOT NULL AND NOT v.in_funnel) AS left_b,
           count(*) AS settled
    FROM pending p
    JOIN settled_as s USING (source_id)
    LEFT JOIN verdict_vocab v USING (verdict)
    GROUP BY p.window_key
)
SELECT *
FROM (
SELECT r.window_key, r.window_start, r.window_end, r.status AS recorded, r.exit_code, r.events, h.hop,
       h."in" + CASE WHEN h.hop = 'zendesk_to_bus' THEN -coalesce(st.left_a, 0)
                     ELSE coalesce(st.onto_bus, 0) - coalesce(st.left_b, 0) END AS "in",
       h."out" + CASE WHEN h.hop = 'zendesk_to_bus' THEN coalesce(st.onto_bus, 0)
                      ELSE coalesce(st.delivered_b, 0) END AS "out",
       h.lost + CASE WHEN h.hop = 'zendesk_to_bus' THEN coalesce(st.lost_a, 0) ELSE coalesce(st.lost_b, 0) END
           AS lost,
       h.pending - CASE WHEN h.hop = 'zendesk_to_bus' THEN coalesce(st.settled_a, 0)
                        ELSE coalesce(st.settled, 0) - coalesce(st.settled_a, 0) END AS pending,
       rc.recovered + CASE WHEN h.hop = 'bus_to_sink' THEN coalesce(st.recovered_b, 0) ELSE 0 END AS recovered,
       t.threshold
FROM runs r
JOIN run_hops h USING (window_key)
LEFT JOIN run_recovered rc USING (window_key, hop)
LEFT JOIN run_thresholds t USING (window_key, hop)
LEFT JOIN settled st USING (window_key)
)
ORDER BY window_start, window_key, hop DESC;
