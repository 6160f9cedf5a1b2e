-- match_stats: how the Zendesk-to-bus hop's expected bus events were matched, one row per kind of match in the
-- vocabulary's order (queries/match_kinds.csv: exactly on the event id, by composite key, ambiguous, by connector
-- sequence position, or not at all). Counted are the expected bus events whose verdict the funnel counts (in_funnel
-- in queries/verdicts.csv).
-- verdict_facts' counts are summed by (match kind, verdict) and the vocabularies joined to those few sums (as in
-- verdict_counts.sql): a join or IN against the verdict rows themselves lets DuckDB build its hash table of every
-- verdict (the verdicts are bound without a row count), past the memory limit at 100 M events.
CREATE OR REPLACE TABLE match_stats AS
WITH counted AS (
    SELECT match_kind, verdict, sum(n)::BIGINT AS events
    FROM verdict_facts
    WHERE expected
    GROUP BY match_kind, verdict
),
in_funnel AS (
    SELECT c.match_kind, sum(c.events) AS events
    FROM counted c
    JOIN verdict_vocab v ON v.verdict = c.verdict AND v.in_funnel
    GROUP BY c.match_kind
)
SELECT m.match_kind, coalesce(f.events, 0)::BIGINT AS events
FROM match_vocab m
LEFT JOIN in_funnel f ON f.match_kind = m.match_kind
ORDER BY m.ord;
