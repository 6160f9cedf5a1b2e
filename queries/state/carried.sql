-- carried: the pending events of earlier windows that no other run has settled, to be judged again by this run
-- (those this window's previous run settled are judged again too: re-running a window replaces its settlements).
-- Every column `pending` has (state.as_carried keeps CARRIED_SCHEMA's, empty where a state file opened read-only, as
-- `run --dry-run` opens it, predates a column).
SELECT p.*
FROM pending p
JOIN runs r USING (window_key)
WHERE r.window_start < $window_start
  AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.window_key = p.window_key AND s.source_id = p.source_id
                                                      AND s.settled_in <> $window_key)
ORDER BY p.window_key, p.source_id;
