-- webhook_tickets: webhook bus events whose Zendesk event id (zendesk_key) names an event of another ticket in the
-- Zendesk ledger (data that disagrees: a merged ticket, say), with that event's ticket. Hop A's exact test compares
-- the id alone (rules.sql exact_candidate), so a single pass links them; partitioned judging must put the bus event in
-- the partition of the Zendesk event's ticket for the same link (queries/partition/by_event_ticket.sql). Few or none:
-- only ids whose ticket differs, and only keys one Zendesk ticket holds.
CREATE OR REPLACE TABLE webhook_tickets AS
WITH keyed AS (
    SELECT DISTINCT zendesk_key, ticket_id FROM (
        SELECT zendesk_key, ticket_id FROM bus WHERE family = 'webhook' AND zendesk_key IS NOT NULL
        UNION ALL SELECT zendesk_key, ticket_id FROM sink WHERE family = 'webhook' AND zendesk_key IS NOT NULL
        UNION ALL SELECT zendesk_key, ticket_id FROM dlq WHERE family = 'webhook' AND zendesk_key IS NOT NULL)
), api AS (
    SELECT zendesk_key, min(ticket_id) AS ticket_id
    FROM zendesk
    WHERE zendesk_key IN (SELECT zendesk_key FROM keyed)
    GROUP BY zendesk_key
    HAVING count(DISTINCT ticket_id) = 1
)
SELECT DISTINCT a.zendesk_key, a.ticket_id
FROM api a JOIN keyed k USING (zendesk_key)
WHERE k.ticket_id IS DISTINCT FROM a.ticket_id;
