-- by_eb_id: the rows of `split_in` (an AWS ledger: bus, sink or dlq) with the partition of their EventBridge id
-- (`part`, 0..$k-1), so every record of one id is summed up by queries/bus_events.sql in the same partition. Rows
-- without an id take no part in bus_events (it skips them): they go to partition 0 with the rest.
-- Only the columns bus_events.sql reads are written (the run-wide queries read the ledgers whole): leaving out the
-- object paths (source_ref) and error messages halves the cost of the split. A column bus_events starts to read must
-- be added here; a partitioned run fails naming it until it is (tests/test_partition.py judges both ways).
-- The object path of a sink row outside Spark's commit log is kept (NULL for every other row): bus_events.sql tells a
-- leftover from an expired entry by its file ($unexpired_files).
-- $k is cast to hash()'s type (UBIGINT): it binds as INTEGER, and UBIGINT % INTEGER is computed in HUGEINT, a
-- 128-bit cast and modulo on every row (~0.5 µs a row: more than the rest of the split query at 10 M events).
SELECT eb_id, zendesk_key, ticket_id, event_type, family, event_time, sequence_id, sequence_position, sequence_total,
       observed_at, sequence_number, committed, replay_name, target_arn, error_code, retry_condition,
       CASE WHEN committed = false THEN source_ref END AS source_ref,
       CASE WHEN eb_id IS NULL THEN 0 ELSE (hash(eb_id) % $k::UBIGINT)::BIGINT END AS part
FROM split_in
