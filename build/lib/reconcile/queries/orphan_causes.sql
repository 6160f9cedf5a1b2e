-- orphan_causes: orphans (downstream records no source event links to) by bus event type and family, with where
-- they were seen: explains whether they are foreign events, replays or Zendesk events the read missed.
CREATE OR REPLACE TABLE orphan_causes AS
SELECT coalesce(event_type, '(none)') AS event_type,
       coalesce(family, '(none)') AS family,
       count(*) AS events,
       count(*) FILTER (WHERE log_copies > 0) AS in_bus_log,
       count(*) FILTER (WHERE sink_rows > 0) AS in_sink,
       count(*) FILTER (WHERE dlq_messages > 0) AS in_dlq,
       count(*) FILTER (WHERE zendesk_key IS NOT NULL) AS with_zendesk_id
FROM orphans
GROUP BY ALL
ORDER BY events DESC, event_type, family;
