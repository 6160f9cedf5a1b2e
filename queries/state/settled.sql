-- settled: what later runs made of pending events (`reconcile trace`: the Zendesk event ids a run showed pending, each
-- of one window): the run that settled each, and how.
SELECT s.window_key, s.source_id, s.settled_in, s.verdict, s.eb_id, s.lateness_s, r.out_dir AS settled_in_run
FROM settlements s
LEFT JOIN runs r ON r.window_key = s.settled_in
WHERE list_contains($source_ids, s.source_id)
ORDER BY s.window_key, s.source_id;
