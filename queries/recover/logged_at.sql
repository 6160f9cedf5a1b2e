-- logged_at: when the bus log logged these EventBridge ids ($eb_ids, text; `bus`: the plan's run's bus ledger), and
-- the events' own time (the connector's occurred_at: a log copy may come long after it). A replay re-sends every
-- event whose time lies in its minutes, planned or not: apply holds a window that holds one another plan sent, or left
-- in doubt, or that landed late.
SELECT DISTINCT eb_id::VARCHAR AS eb_id, observed_at, event_time
FROM bus
WHERE eb_id::VARCHAR IN (SELECT unnest($eb_ids::VARCHAR[])) AND observed_at IS NOT NULL
ORDER BY observed_at, eb_id;
