-- replays_in_reach: archive replays of the recovery journal whose copies may be in this run's stores (sent after
-- $since: the run's read start less a day), or are (the sink holds rows under its replay-name: a replay runs its
-- archive range minute by minute, for longer than a day over a long range). Their copies under new ids are paired
-- with their originals across EventBridge ids (replay_copies.sql), so a run with any is judged in one pass
-- (partition.replay_in_reach).
SELECT count(*) AS replays
FROM recoveries
WHERE route = 'replay'
  AND (sent_at >= $since
       OR coalesce(replay_name IN (SELECT replay_name FROM sink WHERE replay_name IS NOT NULL), false));
