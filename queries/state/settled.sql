-- settled: what later runs made of the pending events an id names (`reconcile trace`: a Zendesk event id, an
-- EventBridge id or a ticket id, as queries/trace/events.sql takes them): the run that settled each, and how.
SELECT s.window_key, s.source_id, s.settled_in, s.verdict, s.eb_id, s.lateness_s, r.out_dir AS settled_in_run
FROM settlements s
JOIN pending p USING (window_key, source_id)
LEFT JOIN runs r ON r.window_key = s.settled_in
WHERE s.source_id = $id OR s.eb_id = $id OR p.eb_id = $id OR p.zendesk_key = $id OR CAST(p.ticket_id AS VARCHAR) = $id
ORDER BY s.window_key, s.source_id;
