-- replay_windows: the fewest 1-minute-granular StartReplay windows that cover every event to replay
-- (`replay_events`: eb_id, logged_at), each with the events it recovers and how many other events the bus logged in
-- it (`bus`), of which how many already reached the sink (`sink`): the copies a replay sends again. A replay
-- selects by the event's own `time`, a little before its log copy: each event's minute starts $slack_s earlier, and
-- the other events counted are those it may re-send (logged in the window or up to $slack_s after it): at most.
-- The plan's ids are text; the ledgers' are UUIDs (older runs' text): compared as text.
WITH minutes AS (
    SELECT DISTINCT unnest(range(date_trunc('minute', logged_at - to_seconds($slack_s)),
                                 date_trunc('minute', logged_at) + INTERVAL 1 minute, INTERVAL 1 minute)) AS minute
    FROM replay_events
), islands AS (
    SELECT minute, minute - INTERVAL 1 minute * row_number() OVER (ORDER BY minute) AS island FROM minutes
), windows AS (
    SELECT min(minute) AS start_at, max(minute) + INTERVAL 1 minute AS end_at FROM islands GROUP BY island
), inside AS (
    SELECT w.start_at, b.eb_id
    FROM windows w JOIN (SELECT DISTINCT eb_id::VARCHAR AS eb_id, observed_at FROM bus) b
      ON b.observed_at >= w.start_at AND b.observed_at - to_seconds($slack_s) < w.end_at
)
SELECT w.start_at, w.end_at,
       (SELECT list(r.eb_id ORDER BY r.eb_id) FROM replay_events r
        WHERE date_trunc('minute', r.logged_at) >= w.start_at AND r.logged_at < w.end_at) AS eb_ids,
       (SELECT count(DISTINCT i.eb_id) FROM inside i
        WHERE i.start_at = w.start_at AND i.eb_id NOT IN (SELECT eb_id FROM replay_events)) AS others,
       (SELECT count(DISTINCT i.eb_id) FROM inside i
        WHERE i.start_at = w.start_at AND i.eb_id NOT IN (SELECT eb_id FROM replay_events)
          AND i.eb_id IN (SELECT eb_id::VARCHAR FROM sink)) AS already_delivered
FROM windows w
ORDER BY w.start_at;
