-- kinds: per Zendesk API kind over the runs read (view `verdicts`: every run's verdicts.parquet, with `run`), how
-- its expected bus events fared at hop A: how many, how many reached the bus and as which bus types, how many were
-- unverified or not emitted, how many lost before the bus, and whether it is a custom field (numeric field_name).
SELECT kind, any_value(model_kind) AS model_kind, any_value(emission) AS emission,
       count(DISTINCT run) AS runs,
       count(*) AS events,
       count(*) FILTER (WHERE eb_id IS NOT NULL) AS on_bus,
       count(*) FILTER (WHERE verdict = 'unverified') AS unverified,
       count(*) FILTER (WHERE verdict = 'not_emitted') AS not_emitted,
       count(*) FILTER (WHERE verdict = 'lost_before_bus') AS lost_before_bus,
       round(count(*) FILTER (WHERE eb_id IS NOT NULL) / count(*), 4) AS on_bus_rate,
       string_agg(DISTINCT bus_type, ' | ' ORDER BY bus_type) AS bus_types,
       regexp_full_match(kind, 'Change:[0-9]+') AS custom_field
FROM verdicts
WHERE source_id = expected_id AND verdict <> 'excluded'
GROUP BY kind
ORDER BY events DESC, kind;
