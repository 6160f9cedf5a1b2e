-- pending: the events a run leaves pending, as state.record keeps them (queries/state/schema.sql `pending`): one per
-- expected bus event (its carrier child: folded children settle with it, so history never adds per-child
-- settlements to per-event figures). An unlinked one comes with the EventBridge ids this run linked to the other
-- events of its ticket (claimed_ids): by hop A (the window's events and those just outside it, zendesk_reach, which
-- no later run judges) or by settling a carried event. A later run re-matches it and must not take one of those, of
-- which the state keeps no other record once their events are settled (queries/settlements.sql `taken`). Each comes
-- with the connector sequence its update owns by this run's links (owner_sequence: rules.sql sequence_owners), which a
-- later run no longer sees once the linked events are settled.
-- `coalesce(x IN (...), false)` is a MARK join built on the few held tickets and ids: verdicts, hop_a and bus_events
-- may be the partitions' files, which give DuckDB no row count (docs/design.md, partitioned judging).
WITH held AS MATERIALIZED (
    SELECT * FROM verdicts WHERE verdict = 'pending' AND source_id = expected_id
), tickets AS MATERIALIZED (
    SELECT DISTINCT ticket_id FROM held WHERE eb_id IS NULL AND ticket_id IS NOT NULL
), ids AS MATERIALIZED (
    SELECT eb_id, ticket_id FROM bus_events WHERE coalesce(ticket_id IN (SELECT ticket_id FROM tickets), false)
), linked AS MATERIALIZED (
    SELECT eb_id FROM hop_a WHERE coalesce(eb_id IN (SELECT eb_id FROM ids), false)
    UNION SELECT eb_id FROM settlements WHERE coalesce(eb_id IN (SELECT eb_id FROM ids), false)
), claims AS (
    SELECT i.ticket_id, list_sort(list(DISTINCT i.eb_id::VARCHAR)) AS claimed_ids
    FROM ids i JOIN linked l USING (eb_id)
    GROUP BY i.ticket_id
), held_tickets AS MATERIALIZED (
    SELECT DISTINCT ticket_id FROM held WHERE audit_id IS NOT NULL AND ticket_id IS NOT NULL
), near_zendesk AS MATERIALIZED (
    SELECT source_id, ticket_id, audit_id, event_time FROM zendesk
    WHERE coalesce(ticket_id IN (SELECT ticket_id FROM held_tickets), false) AND audit_id IS NOT NULL
), owner_links AS (
    SELECT * FROM links_on_tickets('held_tickets', 'hop_a', 'bus_events')
), owners AS MATERIALIZED (
    SELECT * FROM sequence_owners('owner_links')
), near AS (
    -- for an unlinked one, how many other audits of its ticket could claim the bus events it could (rules.sql
    -- zendesk_reach): a later run, whose Zendesk read no longer holds them, aligns its update with a connector
    -- sequence alone (settlements.sql lone_seq) only when there are none, as sequences.sql `lone` does with them in
    -- view. Not an audit that owns a sequence (an audit held too still counts: it may settle before this one does,
    -- and a later run would then not see it)
    SELECT h.source_id, count(DISTINCT z.audit_id) FILTER (WHERE z.audit_id <> h.audit_id) AS near_audits
    FROM held h
    JOIN near_zendesk z ON z.ticket_id = h.ticket_id
                       AND z.event_time BETWEEN h.event_time - zendesk_reach($tolerance_s)
                                            AND h.event_time + zendesk_reach($tolerance_s)
    WHERE h.eb_id IS NULL AND h.audit_id IS NOT NULL
      AND z.audit_id NOT IN (SELECT audit_id FROM owners)
    GROUP BY h.source_id
)
SELECT h.*, CASE WHEN h.eb_id IS NULL THEN c.claimed_ids END AS claimed_ids,
       CASE WHEN h.eb_id IS NULL AND h.audit_id IS NOT NULL THEN coalesce(n.near_audits, 0) END AS near_audits,
       o.sequence_id AS owner_sequence
FROM held h
LEFT JOIN claims c USING (ticket_id)
LEFT JOIN near n USING (source_id)
LEFT JOIN owners o USING (audit_id)
