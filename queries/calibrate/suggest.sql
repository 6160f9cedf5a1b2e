-- suggest: emission-model lines the runs read give evidence for, with the evidence count:
-- * a kind tied to a bus type the model does not give it (by its connector sequence position, or by the webhook's
--   Zendesk id): api_kind,family,bus_type and the kind's cardinality in the model (child for a kind it does not
--   list, or lists as never emitted);
-- * a kind never seen on the bus whose updates' sequences were complete without it (unverified, or not_emitted
--   against the model): api_kind,,,none, saying how many of its events were judged lost (the line would call them
--   not_emitted).
WITH tied AS (
    SELECT model_kind AS api_kind,
           CASE WHEN starts_with(bus_type, 'zen:event-type:') THEN 'webhook' ELSE 'legacy' END AS family,
           bus_type,
           coalesce((SELECT any_value(cardinality) FROM emission_model m
                     WHERE m.api_kind = model_kind AND m.cardinality <> 'none'), 'child') AS cardinality,
           count(*) AS evidence,
           'matched ' || count(*) || ' time(s) by ' || string_agg(DISTINCT match_kind, '/') AS why
    FROM verdicts
    WHERE source_id = expected_id AND bus_type IS NOT NULL
      AND (model_kind, bus_type) NOT IN (SELECT (api_kind, bus_type) FROM emission_model WHERE bus_type IS NOT NULL)
    GROUP BY model_kind, bus_type
), absent AS (
    SELECT model_kind AS api_kind, NULL AS family, NULL AS bus_type, 'none' AS cardinality,
           count(*) FILTER (WHERE unseen AND sequence_complete) AS evidence,
           'absent from ' || count(*) FILTER (WHERE unseen AND sequence_complete)
               || ' complete sequence(s), never on the bus'
               || CASE WHEN count(*) FILTER (WHERE lost) > 0 THEN ', and ' || count(*) FILTER (WHERE lost)
                       || ' of its events were judged lost, which this line would call not_emitted' ELSE '' END
               AS why
    FROM (SELECT *, verdict IN ('unverified', 'not_emitted') AS unseen,
                 verdict IN (SELECT verdict FROM verdict_vocab WHERE loss_hop IS NOT NULL) AS lost
          FROM verdicts WHERE source_id = expected_id AND emission <> 'none')
    GROUP BY model_kind
    HAVING count(*) FILTER (WHERE unseen AND sequence_complete) > 0
       AND model_kind NOT IN (SELECT model_kind FROM verdicts WHERE eb_id IS NOT NULL)
)
SELECT * FROM tied
UNION ALL
SELECT * FROM absent
ORDER BY api_kind, family NULLS LAST, bus_type;
