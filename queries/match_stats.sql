-- match_stats: how the Zendesk-to-bus hop's expected bus events were matched, one row per kind of match in the
-- vocabulary's order (queries/match_kinds.csv: exactly on the event id, by composite key, ambiguous, by connector
-- sequence position, or not at all). Counted are the expected bus events whose verdict the funnel counts (in_funnel
-- in queries/verdicts.csv).
-- The verdicts are counted first and the vocabulary joined to the counts (as in verdict_counts.sql: never a hash table
-- of every verdict row).
CREATE OR REPLACE TABLE match_stats AS
WITH counted AS (
    SELECT match_kind, count(*) AS events
    FROM verdicts
    WHERE source_id = expected_id AND verdict IN (SELECT verdict FROM verdict_vocab WHERE in_funnel)
    GROUP BY match_kind
)
SELECT m.match_kind, coalesce(c.events, 0) AS events
FROM match_vocab m
LEFT JOIN counted c ON c.match_kind = m.match_kind
ORDER BY m.ord;
