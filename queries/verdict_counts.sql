-- verdict_counts: how many source events got each verdict (every verdict listed, zero when absent).
CREATE OR REPLACE TABLE verdict_counts AS
SELECT v.verdict, count(j.verdict) AS events
FROM (VALUES ('delivered'), ('duplicated'), ('dead_lettered'), ('lost_after_bus'), ('lost_before_bus'),
             ('pending'), ('excluded')) AS v(verdict)
LEFT JOIN verdicts j ON j.verdict = v.verdict
GROUP BY v.verdict;
