-- by_ticket: the rows of `split_in` (the zendesk ledger, or the bus_events of one EventBridge-id partition) with the
-- partition of their ticket id (`part`, 0..$k-1). An EventBridge id belongs to the ticket bus_events gives it (the
-- bus log's copy, else the sink's, else the DLQ's), so all its stores' records are judged together; ids no store
-- names a ticket for go to part -1, which every ticket partition reads (they can still be linked by Zendesk event id
-- or connector sequence, never by ticket).
-- $k is cast to hash()'s type (UBIGINT): it binds as INTEGER, and UBIGINT % INTEGER is computed in HUGEINT, a
-- 128-bit cast and modulo on every row (~0.5 µs a row: more than the rest of the split query at 10 M events).
SELECT *, CASE WHEN ticket_id IS NULL THEN -1 ELSE (hash(ticket_id) % $k::UBIGINT)::BIGINT END AS part
FROM split_in
