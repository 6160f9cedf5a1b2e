-- sequence_tickets: connector sequences whose events name more than one ticket (a payload that disagrees with its
-- update's: a merged ticket, say), with the ticket most of them name (the lowest, on a tie). The sequence rule
-- (sequences.sql) looks a position up by sequence id alone, so a single pass sees every position; partitioned
-- judging must put all of the sequence's bus events in one ticket's partition for the same view
-- (queries/partition/by_event_ticket.sql, used only when this or webhook_tickets.sql finds any). Few or none: they
-- are found with one pass of min and max (counting each sequence's tickets for every sequence cost twice as much).
CREATE OR REPLACE TABLE sequence_tickets AS
WITH named AS (
    SELECT sequence_id, ticket_id FROM bus WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL
    UNION ALL SELECT sequence_id, ticket_id FROM sink WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL
    UNION ALL SELECT sequence_id, ticket_id FROM dlq WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL
), several AS (
    SELECT sequence_id FROM named GROUP BY sequence_id HAVING min(ticket_id) <> max(ticket_id)
), counted AS (
    SELECT sequence_id, ticket_id, count(*) AS n FROM named
    WHERE sequence_id IN (SELECT sequence_id FROM several)
    GROUP BY sequence_id, ticket_id
)
SELECT sequence_id, first(ticket_id ORDER BY n DESC, ticket_id) AS ticket_id
FROM counted
GROUP BY sequence_id;
