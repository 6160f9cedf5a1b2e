-- orphans: EventBridge ids seen downstream (bus log, DLQ or sink) that no source event links to and whose Zendesk
-- event time is inside the window: records with no known origin. "In window" is decided by the Zendesk event time
-- at the API's resolution (whole seconds: the payload's time truncated), and a bus event linked to a Zendesk event
-- just outside the window (source_events keeps those) is neither an orphan nor a gap.
-- orphan_candidates.sql finds them; the ids without a ticket it may list once per partition, linked or not in
-- another, so they are looked up here among the links of those ids only (at 100 M events a join of every id with
-- every link would not fit in memory).
CREATE OR REPLACE TABLE orphans AS
WITH shared AS (
    SELECT DISTINCT * EXCLUDE (shared) FROM orphan_candidates WHERE shared
)
SELECT * EXCLUDE (shared) FROM orphan_candidates WHERE NOT shared
UNION ALL
SELECT * FROM shared WHERE eb_id NOT IN (SELECT eb_id FROM hop_a WHERE eb_id IN (SELECT eb_id FROM shared));
