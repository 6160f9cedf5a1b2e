-- source_events: one row per Zendesk child event inside the window (from the zendesk ledger), with its kind,
-- its position among the bus-bound events of its ticket update (to pair with legacy meta.sequence.position)
-- and whether the user excluded its kind.
CREATE OR REPLACE TABLE source_events AS
WITH dedup AS (
    SELECT source_id,
           any_value(zendesk_key) AS zendesk_key,
           any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS kind,
           min(event_time) AS event_time,
           any_value(audit_id) AS audit_id,
           min(source_ref) AS source_ref
    FROM zendesk
    WHERE event_time >= $window_start AND event_time < $window_end
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
