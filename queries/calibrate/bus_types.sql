-- bus_types: per bus type over the runs read, how many bus events of that type an API kind was matched to (view
-- `verdicts`), and how many were orphans with no API counterpart (view `orphans`: the orphan rows of gaps.csv).
WITH matched AS (
    SELECT bus_type, count(*) AS matched, string_agg(DISTINCT kind, ' | ' ORDER BY kind) AS api_kinds
    FROM verdicts WHERE source_id = expected_id AND bus_type IS NOT NULL
    GROUP BY bus_type
), lonely AS (
    SELECT kind AS bus_type, count(*) AS orphans FROM orphans GROUP BY kind
)
SELECT bus_type, CASE WHEN starts_with(bus_type, 'zen:event-type:') THEN 'webhook' ELSE 'legacy' END AS family,
       coalesce(m.matched, 0) AS matched, coalesce(l.orphans, 0) AS orphans, m.api_kinds,
       bus_type IN (SELECT bus_type FROM emission_model) AS in_model
FROM matched m
FULL JOIN lonely l USING (bus_type)
ORDER BY matched + orphans DESC, bus_type;
