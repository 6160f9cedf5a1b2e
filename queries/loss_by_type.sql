-- loss_by_type: per Zendesk event kind, expected bus events (a folded audit counts once) and their verdicts: one
-- column per verdict of the vocabulary (table verdict_vocab, queries/verdicts.csv), in its order, zero when absent.
CREATE OR REPLACE TABLE loss_by_type AS
WITH e AS (
    SELECT kind, verdict, n FROM verdict_facts WHERE expected
), n AS (
    SELECT kind, sum(n)::BIGINT AS events FROM e GROUP BY kind
), p AS (
    PIVOT e ON verdict IN (SELECT verdict FROM verdict_vocab ORDER BY ord) USING coalesce(sum(n), 0)::BIGINT
    GROUP BY kind
)
SELECT n.kind, n.events, p.* EXCLUDE (kind)
FROM n
JOIN p ON p.kind IS NOT DISTINCT FROM n.kind
ORDER BY events DESC, kind;
