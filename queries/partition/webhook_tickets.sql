-- webhook_tickets: webhook bus events whose Zendesk event id (zendesk_key) names an event of another ticket in the
-- Zendesk ledger (data that disagrees: a merged ticket, say), with that event's ticket (the lowest, should the id name
-- several). Hop A's exact test compares the id alone (rules.sql exact_candidate), so a single pass links them;
-- partitioned judging must put the bus event in the partition of the Zendesk event's ticket for the same link
-- (queries/partition/by_event_ticket.sql, used only when this finds any). Few or none.
CREATE OR REPLACE TABLE webhook_tickets AS
SELECT k.zendesk_key, min(z.ticket_id) AS ticket_id
FROM (SELECT zendesk_key, ticket_id FROM bus WHERE family = 'webhook' AND zendesk_key IS NOT NULL
      UNION ALL SELECT zendesk_key, ticket_id FROM sink WHERE family = 'webhook' AND zendesk_key IS NOT NULL
      UNION ALL SELECT zendesk_key, ticket_id FROM dlq WHERE family = 'webhook' AND zendesk_key IS NOT NULL) k
JOIN zendesk z ON z.zendesk_key = k.zendesk_key
WHERE z.ticket_id IS DISTINCT FROM k.ticket_id
GROUP BY k.zendesk_key;
