-- verdict_counts: per verdict of the vocabulary (table verdict_vocab, queries/verdicts.csv), how many expected bus
-- events got it (`events`: the unit summary.json and the loss rates count; a new ticket's folded Create children
-- are one) and how many Zendesk child events (`children`: rows of verdicts.parquet); zero when absent.
CREATE OR REPLACE TABLE verdict_counts AS
SELECT v.verdict,
       count(j.verdict) FILTER (WHERE j.source_id = j.expected_id) AS events,
       count(j.verdict) AS children
FROM verdict_vocab v
LEFT JOIN verdicts j ON j.verdict = v.verdict
GROUP BY v.ord, v.verdict
ORDER BY v.ord;
