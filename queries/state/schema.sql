-- The run-state file: one row per window run, its per-hop figures, the pending events it left open, and the
-- settlements later runs made of them. Created if missing; never dropped.
CREATE TABLE IF NOT EXISTS runs (
    window_key VARCHAR PRIMARY KEY, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, as_of TIMESTAMPTZ,
    status VARCHAR, exit_code INTEGER, generated_at TIMESTAMPTZ, out_dir VARCHAR, events BIGINT);
CREATE TABLE IF NOT EXISTS run_hops (
    window_key VARCHAR, hop VARCHAR, "in" BIGINT, "out" BIGINT, lost BIGINT, pending BIGINT,
    PRIMARY KEY (window_key, hop));
-- per window and hop, of the hop's out, the events the pipeline lost and `reconcile recover` made land (summary
-- hops' `recovered`): a table of its own, added later, so a state without it reads as "not recorded" (NULL), and a
-- read-only open of an older state gets it empty (state._tables_it_lacks)
CREATE TABLE IF NOT EXISTS run_recovered (
    window_key VARCHAR, hop VARCHAR, recovered BIGINT, PRIMARY KEY (window_key, hop));
-- per window and hop, the loss-rate threshold its run judged by ([thresholds]), so `history` derives a window's status
-- from its figures as they stand (later settlements folded in) whatever order windows were run or re-run in (added
-- later: a window recorded before it keeps the status its run recorded)
CREATE TABLE IF NOT EXISTS run_thresholds (
    window_key VARCHAR, hop VARCHAR, threshold DOUBLE, PRIMARY KEY (window_key, hop));
CREATE TABLE IF NOT EXISTS pending (
    window_key VARCHAR, source_id VARCHAR, zendesk_key VARCHAR, eb_id VARCHAR, ticket_id BIGINT, kind VARCHAR,
    event_time TIMESTAMPTZ, position BIGINT, PRIMARY KEY (window_key, source_id));
-- other_eb_ids: the event's other linked EventBridge ids (copies: a resend, a webhook redelivery), so a later run
-- sees whichever copy lands (added after the first states were written: a state without it gets it, empty)
ALTER TABLE pending ADD COLUMN IF NOT EXISTS other_eb_ids VARCHAR[];
-- what the emission model and the connector sequence said of the event (verdicts' emission, sequence_id and
-- sequence_position), so a later run settles it by the same facts: an unknown kind is never settled lost without a
-- sequence position, and one paired with a position is linked by it (added later: older rows have none)
ALTER TABLE pending ADD COLUMN IF NOT EXISTS emission VARCHAR;
ALTER TABLE pending ADD COLUMN IF NOT EXISTS sequence_id VARCHAR;
ALTER TABLE pending ADD COLUMN IF NOT EXISTS sequence_position BIGINT;
-- the EventBridge ids the run linked to the other events of an unlinked event's ticket (queries/export/pending.sql),
-- which a later run must not give it (added later: older rows have none)
ALTER TABLE pending ADD COLUMN IF NOT EXISTS claimed_ids VARCHAR[];
-- the audit (ticket update) the event belongs to, so a later run gives an event its run linked to no sequence the one
-- its audit's other events are linked to now (queries/settlements.sql `audit_seq`; added later: older rows have none)
ALTER TABLE pending ADD COLUMN IF NOT EXISTS audit_id BIGINT;
-- the dead letters the run read for the event (verdicts' dlq_kinesis and error_code): one held pending by a store read
-- in part is dead-lettered still when a later run settles it after the queue, or an archive's lifecycle, dropped the
-- message (added later: older rows have none)
ALTER TABLE pending ADD COLUMN IF NOT EXISTS dlq_kinesis BIGINT;
ALTER TABLE pending ADD COLUMN IF NOT EXISTS error_code VARCHAR;
-- when the bus log first held the event (verdicts' bus_at): its retries run until the horizon past the later of that
-- and its event time (rules.sql retry_start), which a later run whose bus log read starts after it cannot see (added
-- later: older rows have none, and fall back to the event time)
ALTER TABLE pending ADD COLUMN IF NOT EXISTS bus_at TIMESTAMPTZ;
-- how many other audits of an unlinked event's ticket lay near it (queries/export/pending.sql): a later run aligns its
-- update with a connector sequence alone only when none did (added later: older rows have none, and are not aligned)
ALTER TABLE pending ADD COLUMN IF NOT EXISTS near_audits BIGINT;
-- the connector sequence the event's update owns by its run's links (export/pending.sql, rules.sql sequence_owners): a
-- later run, which no longer sees the settled links, takes that update for no other sequence's (added later: older
-- rows have none, and their update may be any sequence's)
ALTER TABLE pending ADD COLUMN IF NOT EXISTS owner_sequence VARCHAR;
CREATE TABLE IF NOT EXISTS settlements (
    window_key VARCHAR, source_id VARCHAR, settled_in VARCHAR, verdict VARCHAR, eb_id VARCHAR,
    lateness_s DOUBLE, PRIMARY KEY (window_key, source_id));
-- The recovery journal (reconcile recover): one row per event of a reviewed plan, written before and after each
-- attempt, so an interrupted apply resumes without sending an event twice. `status`, one of
-- queries/journal_statuses.csv: 'sending' (written before the call; on resume an event left 'sending' is re-checked
-- against the sink before anything is sent again), 'sent' (Kinesis returned shard_id/sequence_number, or StartReplay
-- accepted `replay_name`), 'landed_already' (found in the sink before sending: skipped), 'failed' (Kinesis did not
-- take it: not written; `error` says why, and the next apply sends it again).
CREATE TABLE IF NOT EXISTS recovery_journal (
    plan_digest VARCHAR, window_key VARCHAR, source_id VARCHAR, eb_id VARCHAR, route VARCHAR, target VARCHAR,
    status VARCHAR, attempts INTEGER, shard_id VARCHAR, sequence_number VARCHAR, replay_name VARCHAR,
    sent_at TIMESTAMPTZ, error VARCHAR, PRIMARY KEY (plan_digest, eb_id));
