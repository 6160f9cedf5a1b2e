-- by_eb_id: the rows of `split_in` (an AWS ledger: bus, sink or dlq) with the partition of their EventBridge id
-- (`part`, 0..$k-1), so every record of one id is summed up by queries/bus_events.sql in the same partition. Rows
-- without an id take no part in bus_events (it skips them): they go to partition 0 with the rest.
SELECT *, CASE WHEN eb_id IS NULL THEN 0 ELSE (hash(eb_id) % $k)::BIGINT END AS part
FROM split_in
