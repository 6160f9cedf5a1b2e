-- match_stats: how the Zendesk-to-bus hop was matched: exactly on the event id, by composite key, ambiguous
-- (paired in time order), or not at all.
CREATE OR REPLACE TABLE match_stats AS
SELECT m.match_kind, count(v.match_kind) AS events
FROM (VALUES ('exact'), ('composite'), ('ambiguous'), ('unmatched')) AS m(match_kind)
LEFT JOIN verdicts v ON v.match_kind = m.match_kind AND v.verdict <> 'excluded'
GROUP BY m.match_kind;
