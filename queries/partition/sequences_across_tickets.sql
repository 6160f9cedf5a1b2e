-- sequences_across_tickets: connector sequences whose events name more than one ticket (a payload that disagrees with
-- its update's: a merged ticket, say). The sequence rule (sequences.sql) looks a position up by sequence id alone, so
-- one pass sees every position; partitioned judging, which splits bus events by the ticket they name, would not, and
-- which ticket is the update's is known only once hop A has linked it. So a run with any is judged in one pass
-- (partition.sequences_across_tickets), as one with a replay in reach is. Found with one pass of min and max.
SELECT count(*) AS sequences
FROM (
    SELECT sequence_id
    FROM (SELECT sequence_id, ticket_id FROM bus WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL
          UNION ALL SELECT sequence_id, ticket_id FROM sink WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL
          UNION ALL SELECT sequence_id, ticket_id FROM dlq WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL)
    GROUP BY sequence_id
    HAVING min(ticket_id) <> max(ticket_id)
);
