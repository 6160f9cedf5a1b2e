-- landed: which of the plan's EventBridge ids (`planned`) the sink (`sink`, a fresh read) now holds in a committed
-- file: they landed after the run judged them, and are not sent again. The plan's ids are text, the sink's UUIDs.
SELECT DISTINCT eb_id::VARCHAR AS eb_id
FROM sink
WHERE eb_id::VARCHAR IN (SELECT eb_id FROM planned) AND coalesce(committed, true)
ORDER BY eb_id;
