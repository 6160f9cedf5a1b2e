-- match_stats: how the Zendesk-to-bus hop's expected bus events were matched, one row per kind of match in the
-- vocabulary's order (queries/match_kinds.csv: exactly on the event id, by composite key, ambiguous, by connector
-- sequence position, or not at all). Counted are the expected bus events whose verdict the funnel counts (in_funnel
-- in queries/verdicts.csv).
CREATE OR REPLACE TABLE match_stats AS
SELECT m.match_kind, count(v.match_kind) AS events
FROM match_vocab m
LEFT JOIN verdicts v
       ON v.match_kind = m.match_kind AND v.source_id = v.expected_id
      AND v.verdict IN (SELECT verdict FROM verdict_vocab WHERE in_funnel)
GROUP BY m.ord, m.match_kind
ORDER BY m.ord;
