-- settled_windows: the windows whose pending events this run settled as lost after the bus (`settled`, the run's
-- settlements.parquet): their own runs read those events' bus log copies and dead letters (recover/plan.py).
SELECT DISTINCT window_key
FROM settled
WHERE verdict IN (SELECT verdict FROM verdict_vocab WHERE loss_hop = 'bus_to_sink')
ORDER BY window_key;
