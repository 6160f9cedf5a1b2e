-- replay_copies: the sink copies an archive replay of the recovery journal made under a new EventBridge id, each
-- paired with the event it re-sent, then folded into that event's bus_events row (its sink rows and first arrival
-- added, `replayed` set) and dropped as an id of its own: the original is judged by what landed under either id
-- (verdicts.sql: `recovered`, or a replay `duplicated` when it had landed already) and the copy is no orphan.
-- PIPELINE.md: whether a replay keeps the id is not documented (moto gives a new one); when it keeps it, the id join
-- does this and no copy is found here. A copy is an id seen only under a replay-name the journal names (every sink row
-- of it, and every bus-log copy: the replay goes to every target of the rule, the log group included; no DLQ
-- message), under an id the journal does not name; its original has the same Zendesk facts: ticket, bus type, Zendesk
-- event id and connector position, event time within $tolerance_s (the hop-A composite test). An original the journal
-- sent under that replay is preferred; only a copy with exactly one preferred original is paired (never a guess: an
-- unpaired copy is judged as before, by hop_a).
CREATE OR REPLACE TABLE replay_copies AS
WITH copy_rows AS (
    SELECT eb_id, any_value(replay_name) AS replay_name, landed_at(observed_at, committed, $outside_log) AS sink_at,
           count(DISTINCT sequence_number) AS sink_sequences, count(*) AS n, outside_log_rows(committed) AS n_outside,
           outside_only_sequences(sequence_number, committed) AS outside_only
    FROM sink
    WHERE eb_id IN (SELECT eb_id FROM sink WHERE replay_name IN (SELECT replay_name FROM recoveries
                                                                 WHERE route = 'replay'))
      AND eb_id NOT IN (SELECT eb_id FROM recoveries WHERE eb_id IS NOT NULL)  -- a NULL would make NOT IN NULL
    GROUP BY eb_id
    HAVING count(DISTINCT replay_name) = 1 AND bool_and(replay_name IS NOT NULL)
), logged_copies AS (
    -- copies the bus log holds too, every line of them under the same replay-name as their sink rows
    SELECT b.eb_id FROM bus b JOIN copy_rows c USING (eb_id)
    GROUP BY b.eb_id HAVING bool_and(b.replay_name IS NOT DISTINCT FROM c.replay_name)
), copy AS (
    SELECT eb_id, replay_name, sink_at, sink_sequences,
           sink_copies(n, n_outside, outside_only, $outside_log) AS sink_rows,
           sink_copies_outside(n, n_outside, outside_only, $outside_log) AS uncommitted_rows
    FROM copy_rows
), cand AS (
    SELECT c.*, o.eb_id AS original, r.eb_id IS NOT NULL AS in_journal
    FROM copy c
    JOIN bus_events b ON b.eb_id = c.eb_id AND b.dlq_kinesis + b.dlq_other = 0
                     AND (b.log_copies = 0 OR b.eb_id IN (SELECT eb_id FROM logged_copies))
    JOIN bus_events o
      ON o.ticket_id = b.ticket_id AND o.event_type = b.event_type
     AND o.zendesk_key IS NOT DISTINCT FROM b.zendesk_key AND o.sequence_id IS NOT DISTINCT FROM b.sequence_id
     AND o.sequence_position IS NOT DISTINCT FROM b.sequence_position
     AND abs(epoch(o.event_time) - epoch(b.event_time)) <= $tolerance_s
    LEFT JOIN recoveries r ON r.eb_id = o.eb_id AND r.replay_name = c.replay_name
    WHERE o.eb_id NOT IN (SELECT eb_id FROM copy)
), preferred AS (
    SELECT * FROM cand c
    WHERE in_journal OR NOT EXISTS (SELECT 1 FROM cand j WHERE j.eb_id = c.eb_id AND j.in_journal)
)
SELECT eb_id AS copy_eb_id, any_value(original) AS eb_id, any_value(replay_name) AS replay_name,
       any_value(sink_rows) AS sink_rows, any_value(sink_sequences) AS sink_sequences,
       any_value(uncommitted_rows) AS uncommitted_rows, any_value(sink_at) AS sink_at
FROM preferred
GROUP BY eb_id
HAVING count(*) = 1;

UPDATE bus_events b
SET sink_rows = b.sink_rows + f.sink_rows, sink_sequences = b.sink_sequences + f.sink_sequences,
    uncommitted_rows = b.uncommitted_rows + f.uncommitted_rows, sink_at = least(b.sink_at, f.sink_at), replayed = true
FROM (SELECT eb_id, sum(sink_rows) AS sink_rows, sum(sink_sequences) AS sink_sequences,
             sum(uncommitted_rows) AS uncommitted_rows, min(sink_at) AS sink_at
      FROM replay_copies GROUP BY eb_id) f
WHERE b.eb_id = f.eb_id;

DELETE FROM bus_events WHERE eb_id IN (SELECT copy_eb_id FROM replay_copies);
