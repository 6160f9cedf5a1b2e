-- trace_hints: for each kind of gap (verdict and cause), its earliest event and how many share it: the ids to give
-- `reconcile trace` first when investigating an incident. `events` counts expected bus events (a gap row standing for
-- its own expected bus event, or an orphan), as the figures beside it do: not a new ticket's every Create child.
CREATE OR REPLACE TABLE trace_hints AS
WITH g AS (
    SELECT *, coalesce(cause, CASE WHEN unlogged_at_bus THEN 'not in the bus log' END) AS why FROM gaps
)
SELECT verdict, why AS cause, count(*) FILTER (WHERE expected_id IS NULL OR source_id = expected_id) AS events,
       arg_min(coalesce(source_id, eb_id::VARCHAR),
               (event_time, coalesce(source_id, ''), coalesce(eb_id::VARCHAR, ''))) AS trace_id,
       min(event_time) AS first_event_time
FROM g
GROUP BY verdict, why
ORDER BY first_event_time, verdict, cause;
