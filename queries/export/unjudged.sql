-- unjudged: of the pending events the window's recorded run left (`previous`), those this run of the window gave no
-- verdict: its Zendesk read was incomplete, so it did not list them. state.record keeps them pending; replaced by
-- this run's pending set alone, they would never be carried, settled or counted again. (A MARK join on the few
-- previous ids, as export/pending.sql's.)
SELECT * FROM previous WHERE NOT coalesce(source_id IN (SELECT source_id FROM verdicts), false) ORDER BY source_id;
