-- orphan_candidates: EventBridge ids in the window that no link of this pass reaches (judged in partitions: no link
-- of this ticket partition, engine.BY_TICKET). An id a store names a ticket for is read, and can be linked, in its
-- ticket's partition only, so for those ids this is the answer. An id no store names a ticket for (`shared`) is read
-- by every partition and may be linked in another: orphans.sql settles those few once, against every link. The
-- events of a sequence the sequence rule aligned with an update none of whose events links (seq_units `lone`: a
-- merge's Ticket Merged, a deletion's, spam's) are that update's, whose children's verdicts rest on them: no orphans
-- (counted as such, they made the Zendesk listing's shortfall rule hold off: zendesk_shortfall.sql).
CREATE OR REPLACE TABLE orphan_candidates AS
SELECT b.eb_id, b.zendesk_key, b.ticket_id, b.event_type, b.family, b.event_time, b.log_copies, b.sink_rows,
       b.dlq_kinesis + b.dlq_other AS dlq_messages, b.ticket_id IS NULL AS shared
FROM bus_events b
WHERE date_trunc('second', b.event_time) >= $window_start AND date_trunc('second', b.event_time) < $window_end
  AND b.eb_id NOT IN (SELECT eb_id FROM hop_a)
  AND coalesce(b.sequence_id NOT IN (SELECT sequence_id FROM seq_units WHERE lone), true);
