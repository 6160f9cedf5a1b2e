-- source_events: one row per Zendesk child event inside the window (from the zendesk ledger), with its kind,
-- its position among the bus-bound events of its ticket update (to pair with legacy meta.sequence.position)
-- and whether the user excluded its kind.
CREATE OR REPLACE TABLE source_events AS
WITH in_window AS (
    SELECT * FROM zendesk WHERE event_time >= $window_start AND event_time < $window_end
), repeated AS (
    -- an event read twice (overlapping pages): rare, so only these rows pay for the aggregation
    SELECT source_id FROM in_window WHERE source_id IS NOT NULL GROUP BY source_id HAVING count(*) > 1
), dedup AS (
    SELECT source_id, zendesk_key, ticket_id, event_type AS kind, event_time, audit_id, source_ref
    FROM in_window
    WHERE source_id IS NOT NULL AND source_id NOT IN (SELECT source_id FROM repeated)
    UNION ALL
    SELECT source_id,
           any_value(zendesk_key) AS zendesk_key,
           any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS kind,
           min(event_time) AS event_time,
           any_value(audit_id) AS audit_id,
           min(source_ref) AS source_ref
    FROM in_window
    WHERE source_id IS NULL OR source_id IN (SELECT source_id FROM repeated)
    GROUP BY source_id
), mapped AS (
    SELECT d.*, d.kind IN (SELECT api_kind FROM kind_map) AS bus_bound FROM dedup d
)
SELECT source_id, zendesk_key, ticket_id, kind, event_time, audit_id, source_ref,
       CASE WHEN bus_bound
            THEN row_number() OVER (PARTITION BY audit_id, bus_bound
                                    ORDER BY try_cast(source_id AS BIGINT), source_id)
       END AS position,
       kind IN (SELECT kind FROM excluded_kinds) AS excluded
FROM mapped;
