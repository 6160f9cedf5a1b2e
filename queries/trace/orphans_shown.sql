-- orphans_shown: gaps.csv's orphan rows (bound as `orphans_raw`, every column as text), typed as trace/events.sql
-- shows events: the orphans a run found have no table of their own in its folder.
CREATE OR REPLACE TEMP TABLE orphans_shown AS  -- a table: gaps.csv is read once, not by each query
SELECT verdict, eb_id, try_cast(ticket_id AS BIGINT) AS ticket_id, kind,
       try_cast(event_time AS TIMESTAMPTZ) AS event_time, cause, match_kind,
       try_cast(log_copies AS BIGINT) AS log_copies, try_cast(sink_rows AS BIGINT) AS sink_rows, error_code,
       try_cast(unlogged_at_bus AS BOOLEAN) AS unlogged_at_bus
FROM orphans_raw
WHERE verdict = 'orphan';
