-- zendesk_shortfall: whether a Zendesk read complete by its own account ends before the window does. The bus holds
-- events of tickets the read lists, of types an API child stands for (the emission model's bus types of cardinality
-- audit or child), which no Zendesk event links to and whose Zendesk time lies past the newest audit the read lists
-- (by more than the composite tolerance: rules.sql zendesk_reach): their audits are missing from the listing, which
-- ended early (an end_of_stream page too soon: a proxy, an API fault) -- every event after it was never judged, and a
-- day with losses there was called clean. One row: how many, the first one's time and id, the newest audit's time;
-- reconcile.completeness.listing_short makes the read incomplete on it. Orphans before the newest audit have other
-- causes (orphan_causes); activity the export does not list at all (AI-agent tickets outside support_type_scope,
-- another account on the bus) is on tickets the read does not list.
CREATE OR REPLACE TABLE zendesk_shortfall AS
WITH listed AS (
    SELECT max(event_time) AS newest FROM zendesk
), past AS (
    SELECT o.eb_id, o.event_time
    FROM orphans o, listed l
    WHERE o.event_time > l.newest + zendesk_reach($tolerance_s)
      AND o.ticket_id IN (SELECT ticket_id FROM zendesk)
      AND o.event_type IN (SELECT bus_type FROM emission_model WHERE cardinality <> 'none')
)
SELECT (SELECT count(*) FROM past) AS events,
       (SELECT min(event_time) FROM past) AS first_event_time,
       (SELECT arg_min(eb_id, event_time)::VARCHAR FROM past) AS first_eb_id,
       (SELECT newest FROM listed) AS newest_audit;
