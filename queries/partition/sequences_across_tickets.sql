-- sequences_across_tickets: connector sequences whose events name more than one ticket (a payload that disagrees with
-- its update's: a merged ticket, say). The sequence rule (sequences.sql) looks a position up by sequence id alone, so
-- one pass sees every position; partitioned judging, which splits bus events by the ticket they name, would not, and
-- which ticket is the update's is known only once hop A has linked it. So a run with any is judged in one pass
-- (partition.sequences_across_tickets), as one with a replay in reach is. Found with one pass of min and max, grouped
-- by the id's hash (a quarter quicker than by the text): two sequences that share a hash can only make a run judged in
-- one pass that need not be, never miss one.
SELECT count(*) AS sequences
FROM (
    SELECT h
    FROM (SELECT hash(sequence_id) AS h, ticket_id FROM bus
          WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL
          UNION ALL SELECT hash(sequence_id), ticket_id FROM sink
          WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL
          UNION ALL SELECT hash(sequence_id), ticket_id FROM dlq
          WHERE sequence_id IS NOT NULL AND ticket_id IS NOT NULL)
    GROUP BY h
    HAVING min(ticket_id) <> max(ticket_id)
);
