-- orphan_causes: orphans (downstream records no source event links to) by bus event type and family, with where
-- they were seen: explains whether they are foreign events, replays or Zendesk events the read missed. `listed_update`:
-- the connector's events of a listed update none of whose children links (a merge, a deletion, spam: their children
-- judged by that sequence, sequences.sql `lone`), accounted for though no event links to them.
CREATE OR REPLACE TABLE orphan_causes AS
SELECT coalesce(event_type, '(none)') AS event_type,
       coalesce(family, '(none)') AS family,
       count(*) AS events,
       count(*) FILTER (WHERE log_copies > 0) AS in_bus_log,
       count(*) FILTER (WHERE sink_rows > 0) AS in_sink,
       count(*) FILTER (WHERE dlq_messages > 0) AS in_dlq,
       count(*) FILTER (WHERE zendesk_key IS NOT NULL) AS with_zendesk_id,
       count(*) FILTER (WHERE lone_update) AS listed_update
FROM orphans
GROUP BY ALL
ORDER BY events DESC, event_type, family;
