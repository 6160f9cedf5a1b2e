-- unjudged: of the pending events the window's recorded run left (`previous`), those this run of the window gave no
-- verdict: its Zendesk read was incomplete, so it did not list them. state.record keeps them pending; replaced by
-- this run's pending set alone, they would never be carried, settled or counted again. The verdicts may be the
-- partitions' files, which give DuckDB no row count: the few judged ids are found with a MARK join built on
-- `previous` and kept apart (MATERIALIZED) from the anti-join after it (docs/design.md, partitioned judging).
WITH judged AS MATERIALIZED (
    SELECT source_id FROM verdicts WHERE coalesce(source_id IN (SELECT source_id FROM previous), false)
)
SELECT * FROM previous WHERE source_id NOT IN (SELECT source_id FROM judged) ORDER BY source_id;
