-- recoveries: what the recovery journal says was sent for each EventBridge id (latest attempt of any plan), bound
-- by the engine as `recoveries` so the verdicts can tell an event that landed after a recovery from one that was
-- only late.
SELECT eb_id, arg_max(route, sent_at) AS route, arg_max(target, sent_at) AS target,
       arg_max(replay_name, sent_at) AS replay_name, arg_max(plan_digest, sent_at) AS plan_digest,
       min(sent_at) AS sent_at
FROM recovery_journal
WHERE status = 'sent'
GROUP BY eb_id
ORDER BY eb_id;
