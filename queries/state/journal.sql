-- journal: every row of the recovery journal (every plan, every status), for the run's evidence and the engine's
-- `recovery_journal` view: the recovery funnel counts planned, sent, failed and skipped events from it.
SELECT plan_digest, window_key, source_id, eb_id, route, target, status, attempts, shard_id, sequence_number,
       replay_name, sent_at, error
FROM recovery_journal
ORDER BY plan_digest, eb_id;
