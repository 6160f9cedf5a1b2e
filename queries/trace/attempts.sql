-- trace attempts: the recovery journal's rows (the run's evidence/recovery_journal.parquet) for the named events'
-- EventBridge ids: each plan's attempt, its route, status, when it was sent and what Kinesis or StartReplay returned.
WITH named AS (
    SELECT eb_id FROM verdicts
    WHERE source_id = $id OR eb_id = $id OR list_contains(other_eb_ids, $id) OR zendesk_key = $id
       OR CAST(ticket_id AS VARCHAR) = $id
    UNION ALL SELECT $id
)
SELECT j.eb_id, j.plan_digest, j.route, j.target, j.status, j.attempts, j.sent_at, j.shard_id, j.sequence_number,
       j.replay_name, j.error
FROM recovery_journal j
WHERE j.eb_id IN (SELECT eb_id FROM named WHERE eb_id IS NOT NULL)
ORDER BY j.eb_id, j.sent_at NULLS LAST, j.plan_digest;
