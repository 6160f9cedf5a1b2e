-- match_stats: how the Zendesk-to-bus hop's expected bus events were matched: exactly on the event id, by
-- composite key, ambiguous (paired in time order), by connector sequence position, or not at all. Counted are the
-- expected bus events whose verdict the funnel counts (in_funnel in queries/verdicts.csv).
CREATE OR REPLACE TABLE match_stats AS
SELECT m.match_kind, count(v.match_kind) AS events
FROM (VALUES (1, 'exact'), (2, 'composite'), (3, 'ambiguous'), (4, 'sequence'), (5, 'unmatched')) AS m(ord, match_kind)
LEFT JOIN verdicts v
       ON v.match_kind = m.match_kind AND v.source_id = v.expected_id
      AND v.verdict IN (SELECT verdict FROM verdict_vocab WHERE in_funnel)
GROUP BY m.ord, m.match_kind
ORDER BY m.ord;
