-- verdict_counts: how many source events got each verdict (every verdict listed, zero when absent).
CREATE OR REPLACE TABLE verdict_counts AS
SELECT v.verdict, count(j.verdict) AS events
FROM (VALUES (1, 'delivered'), (2, 'duplicated'), (3, 'dead_lettered'), (4, 'lost_after_bus'),
             (5, 'lost_before_bus'), (6, 'pending'), (7, 'excluded')) AS v(ord, verdict)
LEFT JOIN verdicts j ON j.verdict = v.verdict
GROUP BY v.ord, v.verdict
ORDER BY v.ord;
