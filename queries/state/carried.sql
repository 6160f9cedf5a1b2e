-- carried: the pending events of earlier windows that no other run has settled, to be judged again by this run
-- (those this window's previous run settled are judged again too: re-running a window replaces its settlements).
-- Every column `pending` has (state.as_carried keeps CARRIED_SCHEMA's, empty where a state file opened read-only, as
-- `run --dry-run` opens it, predates a column).
-- An event two overlapping windows left pending (a daily run and an ad-hoc window over the same hours) is one event:
-- carried once (from the earliest window), and not again once any other run settled it; `holders` lists every such
-- window, since history.sql folds its settlement into each (summary.fold_carried checks each against its threshold).
SELECT p.*, list_sort(list(p.window_key) OVER (PARTITION BY p.source_id)) AS holders
FROM pending p
JOIN runs r USING (window_key)
WHERE r.window_start < $window_start
  AND NOT EXISTS (SELECT 1 FROM settlements s WHERE s.source_id = p.source_id AND s.settled_in <> $window_key)
QUALIFY row_number() OVER (PARTITION BY p.source_id ORDER BY r.window_start, p.window_key) = 1
ORDER BY p.window_key, p.source_id;
