-- pending: the events a run leaves pending, as state.record keeps them (queries/state/schema.sql `pending`): one per
-- expected bus event (its carrier child: folded children settle with it, so history never adds per-child
-- settlements to per-event figures). An unlinked one comes with the EventBridge ids this run linked to the other
-- events of its ticket (claimed_ids): a later run re-matches it and must not take one of those, of which the state
-- keeps no other record once their events are settled (queries/settlements.sql `taken`).
WITH held AS MATERIALIZED (
    SELECT * FROM verdicts WHERE verdict = 'pending' AND source_id = expected_id
), siblings AS MATERIALIZED (
    -- `coalesce(x IN (...), false)` is a MARK join built on the few held tickets: verdicts may be the partitions'
    -- Arrow files, which give DuckDB no row count (docs/design.md, partitioned judging)
    SELECT ticket_id, eb_id, other_eb_ids FROM verdicts
    WHERE eb_id IS NOT NULL AND coalesce(ticket_id IN (SELECT ticket_id FROM held WHERE eb_id IS NULL), false)
), claims AS (
    SELECT ticket_id, list_sort(list(DISTINCT id)) AS claimed_ids
    FROM (SELECT ticket_id, eb_id::VARCHAR AS id FROM siblings
          UNION ALL SELECT ticket_id, unnest(other_eb_ids) AS id FROM siblings)
    GROUP BY ticket_id
)
SELECT h.*, CASE WHEN h.eb_id IS NULL THEN c.claimed_ids END AS claimed_ids
FROM held h
LEFT JOIN claims c USING (ticket_id)
