-- held_dead_letters: the carried events a run held pending again keep the dead letters it read for them (settlements
-- `dlq_kinesis`, `error_code`: what the state had, and this run's), so a later run settles one dead-lettered even after
-- the queue, or an archive's lifecycle, dropped the message (queries/settlements.sql reads them back).
UPDATE pending p
SET dlq_kinesis = s.dlq_kinesis, error_code = coalesce(s.error_code, p.error_code)
FROM new_settlements s
WHERE s.verdict = 'pending' AND s.dlq_kinesis > 0 AND p.window_key = s.window_key AND p.source_id = s.source_id;
