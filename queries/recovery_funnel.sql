-- recovery_funnel: what became of the recoveries (`reconcile recover`) of the events this run judges or settles, from
-- the recovery journal (`recovery_journal`, every plan's rows) and this run's verdicts: planned (events the journal
-- holds), sent, landed (queries/rules.sql recovery_landed: judged 'recovered', or 'duplicated' with the recovery's
-- copy one of the copies: landed_twice; with the lag percentiles of those the sink gave an arrival time), still
-- pending (sent, inside the horizon counted from the send), not landed (sent, horizon passed: lost again), landed
-- before the send (late on its own: delivered or duplicated, not recovered), failed (Kinesis did not take it: not
-- written), landed already (found in the sink before sending: skipped) and unfinished (left 'sending' by an
-- interrupted apply). One row; all zero when no recovery touches the run (summary.json then leaves `recovery` out).
-- An event several plans name counts once, by its furthest status (queries/journal_statuses.csv: sent, landed
-- already, failed, sending).
CREATE OR REPLACE TABLE recovery_funnel AS
WITH judged AS MATERIALIZED (
    -- the events the journal names, found with MARK joins built on the journal and kept apart (MATERIALIZED) from
    -- the join below: the verdicts are read from files that give DuckDB no row count (settlements.sql, settle_near)
    SELECT eb_id, verdict, recovery_lag_s, recovery_landed(verdict, sink_at, recovery_sent_at) AS recovery_landed
    FROM verdicts
    WHERE source_id = expected_id AND coalesce(eb_id IN (SELECT eb_id FROM recovery_journal), false)
    UNION ALL
    SELECT eb_id, verdict, recovery_lag_s, recovery_landed FROM settlements
    WHERE coalesce(eb_id IN (SELECT eb_id FROM recovery_journal), false)
), attempts AS (
    -- an event's furthest status in the vocabulary's order (queries/journal_statuses.csv); a status it does not
    -- know ranks first, as in doubt
    SELECT j.eb_id, arg_max(coalesce(v.status, 'sending'), coalesce(v.ord, 0)) AS status
    FROM recovery_journal j
    LEFT JOIN journal_status_vocab v USING (status)
    GROUP BY j.eb_id
), j AS (
    SELECT a.eb_id, a.status, any_value(v.verdict) AS verdict, max(v.recovery_lag_s) AS lag_s,
           coalesce(bool_or(v.recovery_landed), false) AS landed
    FROM attempts a JOIN judged v USING (eb_id)
    GROUP BY a.eb_id, a.status
)
SELECT count(*) AS planned,
       count(*) FILTER (WHERE status = 'sent') AS sent,
       count(*) FILTER (WHERE status = 'sent' AND landed) AS landed,
       count(*) FILTER (WHERE status = 'sent' AND verdict = 'duplicated' AND landed) AS landed_twice,
       count(*) FILTER (WHERE status = 'sent' AND verdict = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'sent' AND verdict IN (SELECT verdict FROM verdict_vocab
                                                        WHERE loss_hop = 'bus_to_sink')) AS not_landed,
       count(*) FILTER (WHERE status = 'sent' AND NOT landed
                           AND verdict IN (SELECT verdict FROM verdict_vocab WHERE reached_sink)) AS landed_before_send,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'landed_already') AS landed_already,
       count(*) FILTER (WHERE status = 'sending') AS unfinished,
       quantile_cont(lag_s, 0.5) AS lag_p50_s,
       max(lag_s) AS lag_max_s
FROM j;
