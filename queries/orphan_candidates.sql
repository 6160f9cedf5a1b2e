-- orphan_candidates: EventBridge ids in the window that no link of this pass reaches (judged in partitions: no link
-- of this ticket partition, engine.BY_TICKET). An id a store names a ticket for is read, and can be linked, in its
-- ticket's partition only, so for those ids this is the answer. An id no store names a ticket for (`shared`) is read
-- by every partition and may be linked in another: orphans.sql settles those few once, against every link.
-- `lone_update`: its sequence is one the sequence rule aligned with an update none of whose events links (seq_units
-- `lone`: a merge's Ticket Merged, a deletion's, spam's, or an update of kinds the model does not know): still an
-- orphan (no source event links to it), but its update is a listed audit, so it is no sign of another account on the
-- bus (zendesk_shortfall.sql: counted there, one merge turned the short-listing rule off).
CREATE OR REPLACE TABLE orphan_candidates AS
SELECT b.eb_id, b.zendesk_key, b.ticket_id, b.event_type, b.family, b.event_time, b.log_copies, b.sink_rows,
       b.dlq_kinesis + b.dlq_other AS dlq_messages, b.ticket_id IS NULL AS shared,
       b.ticket_id IS NOT NULL AND coalesce(b.sequence_id IN (SELECT sequence_id FROM seq_units WHERE lone), false)
           AS lone_update
FROM bus_events b
WHERE date_trunc('second', b.event_time) >= $window_start AND date_trunc('second', b.event_time) < $window_end
  AND b.eb_id NOT IN (SELECT eb_id FROM hop_a);
