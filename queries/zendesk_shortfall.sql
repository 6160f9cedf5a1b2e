-- zendesk_shortfall: whether a Zendesk read complete by its own account ends before the window does. The bus holds
-- events of tickets the read lists, of kinds an audit stands for (the emission model's bus types of cardinality audit
-- or child), which no Zendesk event links to and whose Zendesk time lies past the newest audit the read lists (by more
-- than the composite tolerance: rules.sql zendesk_reach): their audits are missing from the listing, which ended early
-- (an end_of_stream page too soon: a proxy, an API fault) -- every event after it went unjudged, and a day with losses
-- there was called clean. Only when such orphans are not a thing of this pipeline anyway: none lies before the newest
-- audit, by more than the tolerance (a second Zendesk account on the same bus numbers its tickets from 1 too, so its
-- events fall on ticket ids the read lists, all day long; those within it of the newest audit count neither way: the
-- next update after a cut may come seconds later), and more than one lies past it (one may be anything). One row:
-- `short` (and `held_off`), how many lie past and before, the first past one's time and id, the newest audit's time;
-- reconcile.completeness.listing_short makes the read incomplete on `short` and says when the orphans before hold it
-- off. A second account busy only after this one's last audit still makes a day `short`.
CREATE OR REPLACE TABLE zendesk_shortfall AS
WITH listed AS (
    SELECT max(event_time) AS newest FROM zendesk
), candidates AS (
    SELECT o.eb_id, o.event_time, o.event_time > l.newest + zendesk_reach($tolerance_s) AS past,
           o.event_time < l.newest - zendesk_reach($tolerance_s) AS before
    FROM orphans o, listed l
    WHERE o.ticket_id IN (SELECT ticket_id FROM zendesk) AND NOT o.lone_update  -- a listed update's (a merge's)
      AND o.event_type IN (SELECT bus_type FROM emission_model WHERE cardinality <> 'none')
), counted AS (
    SELECT count(*) FILTER (WHERE past) AS events, count(*) FILTER (WHERE before) AS before,
           min(event_time) FILTER (WHERE past) AS first_event_time,
           arg_min(eb_id, event_time) FILTER (WHERE past)::VARCHAR AS first_eb_id
    FROM candidates
)
-- `held_off`: enough past it, but such orphans lie before it too (said on the read, not held against it)
SELECT events > 1 AND before = 0 AS short, events > 1 AND before > 0 AS held_off, events, before, first_event_time,
       first_eb_id,
       (SELECT newest FROM listed) AS newest_audit
FROM counted;
