-- model_file: what `calibrate --write` writes, a [match] emission_model file. Such a file replaces every line of each
-- kind it names (emission.load_model), so a kind a suggestion names gets all its lines: the model's own (of the
-- model the newest run judged by) beside the suggested ones; a kind suggested never emitted (none) gets that line
-- alone, as it says the kind makes no bus event.
SELECT api_kind, family, bus_type, cardinality FROM suggest_rows
UNION
SELECT m.api_kind, m.family, m.bus_type, m.cardinality FROM emission_model m
WHERE m.api_kind IN (SELECT api_kind FROM suggest_rows WHERE cardinality <> 'none') AND m.cardinality <> 'none'
ORDER BY api_kind, family NULLS LAST, bus_type NULLS LAST;
