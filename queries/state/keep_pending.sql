-- keep_pending: the pending events of a window's previous run that this run of the window gave no verdict (its
-- Zendesk read was incomplete: run.finish), kept pending under the window and counted in its hop figures as the
-- previous run counted them, so each hop still balances (in = out + lost + pending) and history.sql folds their
-- settlements in: one with no EventBridge id waits at zendesk_to_bus; one linked to an id is on the bus
-- (zendesk_to_bus out) and waits at bus_to_sink.
-- The events themselves are added by add_pending.sql (state.record), as the run's own pending events are.
UPDATE run_hops h
SET "in" = h."in" + k.n_in, "out" = h."out" + k.n_out, pending = h.pending + k.n_pending
FROM (
    SELECT 'zendesk_to_bus' AS hop, count(*) AS n_in, count(eb_id) AS n_out, count(*) - count(eb_id) AS n_pending
    FROM kept_pending
    UNION ALL
    SELECT 'bus_to_sink', count(eb_id), 0, count(eb_id) FROM kept_pending
) k
WHERE h.window_key = $window_key AND h.hop = k.hop;
