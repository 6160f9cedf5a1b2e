-- verdict_counts: per verdict of the vocabulary (table verdict_vocab, queries/verdicts.csv), how many expected bus
-- events got it (`events`: the unit summary.json and the loss rates count; a new ticket's folded Create children
-- are one) and how many Zendesk child events (`children`: rows of verdicts.parquet), and of those events how many
-- reached the sink only in files outside Spark's commit log (`outside_log`: rules.sql only_outside_log); zero when
-- absent.
-- verdict_facts' counts are summed and the vocabulary joined to the sums: a join of the vocabulary to every verdict
-- row would have DuckDB build its hash table of the verdicts (at 100 M events, more than the memory limit).
CREATE OR REPLACE TABLE verdict_counts AS
WITH counted AS (
    SELECT verdict, sum(n) FILTER (WHERE expected)::BIGINT AS events, sum(n)::BIGINT AS children,
           sum(n) FILTER (WHERE expected AND outside_log)::BIGINT AS outside_log
    FROM verdict_facts
    GROUP BY verdict
)
SELECT v.verdict, coalesce(c.events, 0) AS events, coalesce(c.children, 0) AS children,
       coalesce(c.outside_log, 0) AS outside_log
FROM verdict_vocab v
LEFT JOIN counted c ON c.verdict = v.verdict
ORDER BY v.ord;
