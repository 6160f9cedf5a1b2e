-- rules: the judging rules, each stated once as a DuckDB macro (docs/design.md, "Where each rule lives"). This
-- window's events (hop_a.sql, verdicts.sql) and the pending events carried in from earlier windows
-- (settlements.sql) are matched, summed up and judged by these same macros. Runs first; makes no table.
-- Adding a verdict: a row in queries/verdicts.csv and its line in verdict_of (a new fact it needs: a parameter with
-- a default, so callers that cannot know it need not change).

-- hop A, exact: a webhook-family bus event carries the Zendesk event id.
-- (settlements.sql's `settle_near` keeps the bus events whose zendesk_key, ticket_id or eb_id a carried event has: a
-- candidate test that compares another column must be added there too.)
CREATE OR REPLACE MACRO exact_candidate(b_family, b_key, s_key) AS
    b_family = 'webhook' AND b_key = s_key;

-- hop A, composite: same ticket and model kind, time within tolerance_s seconds at the API's resolution. An audit's
-- time is a whole second (its true time lies anywhere in that second), a bus time carries the fraction after it: the
-- bus time is cut to its second, so a pair is a candidate when some instant of the audit's second is within the
-- tolerance (a bus event 10.4 s after the audit's second began may be 9.4 s after the audit). `near_second` is that
-- time test alone (the sequence rule's lone updates: sequences.sql, settlements.sql).
CREATE OR REPLACE MACRO near_second(s_time, b_time, tolerance_s) AS
    abs(epoch(date_trunc('second', b_time)) - epoch(s_time)) <= tolerance_s;
CREATE OR REPLACE MACRO composite_candidate(s_ticket, s_kind, s_time, b_ticket, b_kind, b_time, tolerance_s) AS
    b_ticket = s_ticket AND b_kind = s_kind AND near_second(s_time, b_time, tolerance_s);

-- one ticket update, one connector sequence (meta.sequence.id): an audit whose linked connector events (table `links`:
-- audit_id, sequence_id, `owning`, `family`, a row per link, or per sequence an earlier run found the audit owns:
-- pending.owner_sequence) all carry one sequence, at least one of them by a link that is no guess (`owning_link`, as
-- hop_a.sql's anchors: exact, or the one candidate each way), is that sequence's update, so it is no claimant of
-- another sequence near it (the sequence rule's lone updates: sequences.sql `lone`, settlements.sql `lone_seq`, and
-- export/pending.sql's near_audits for them). Any other audit may be any sequence's: an ambiguous pairing alone lent a
-- merge another update's sequence, and that update's loss the merge's complete one. Only connector (legacy) events
-- count: a webhook carries a sequence of its own, and an update linked by its webhook alone made its connector
-- sequence an unclaimed one beside it.
CREATE OR REPLACE MACRO owning_link(match_kind) AS coalesce(match_kind IN ('exact', 'composite'), false);
-- this run's links (table `links`: hop_a) of the Zendesk events on the tickets of table `tickets` (ticket_id) to the
-- bus events (table `bus`), as sequence_owners takes them: the audit, the sequence and family of the linked bus event,
-- whether the link is an owning one. MARK joins built on those few tickets and ids: hop_a and bus_events may be the
-- partitions' files, which give DuckDB no row count (export/pending.sql, settlements.sql).
CREATE OR REPLACE MACRO links_on_tickets(tickets, links, bus) AS TABLE
WITH z AS MATERIALIZED (
    SELECT source_id, audit_id FROM zendesk
    WHERE coalesce(ticket_id IN (SELECT ticket_id FROM query_table(tickets)), false) AND audit_id IS NOT NULL
), l AS MATERIALIZED (
    SELECT z.audit_id, h.eb_id, owning_link(h.match_kind) AS owning
    FROM (SELECT source_id, eb_id, match_kind FROM query_table(links)
          WHERE coalesce(source_id IN (SELECT source_id FROM z), false)) h
    JOIN z USING (source_id)
)
SELECT l.audit_id, b.sequence_id, l.owning, b.family
FROM l
JOIN (SELECT eb_id, sequence_id, family FROM query_table(bus) WHERE coalesce(eb_id IN (SELECT eb_id FROM l), false)) b
  USING (eb_id);
CREATE OR REPLACE MACRO sequence_owners(links) AS TABLE
SELECT audit_id, min(sequence_id) AS sequence_id FROM query_table(links)
WHERE family = 'legacy'
GROUP BY audit_id
HAVING count(sequence_id) = count(*) AND count(DISTINCT sequence_id) = 1 AND bool_or(owning);

-- hop A's reach beyond the window (docs/design.md, "In window"): every bus event hop A may pair must meet every Zendesk
-- event that could claim it, or one whose claimant is missing goes to another event (a false delivery). A candidate is
-- within tolerance_s of the audit's second, so the window's events claim bus events up to tolerance_s + 1 s beyond it;
-- Zendesk events up to 2 x tolerance_s + 1 s beyond it could claim those too, so they take part (not judged:
-- in_window false), with the bus events they could claim, up to 3 x tolerance_s + 2 s beyond it. The Zendesk source
-- reads as far (reconcile.window.zendesk_reach, checked against this macro by tests/test_queries.py).
CREATE OR REPLACE MACRO zendesk_reach(tolerance_s) AS to_seconds(2 * tolerance_s + 1);
CREATE OR REPLACE MACRO bus_reach(tolerance_s) AS to_seconds(3 * tolerance_s + 2);

-- does a candidate's sequence position fit the expected event's possible positions pos_low..pos_high (its rank among
-- its audit's expected events, without and with the kinds the model does not know; no lower bound when pos_low is
-- NULL: a carried event keeps only its highest possible position)? Positions are *assumed* to follow the audit's
-- child order (Zendesk documents no order), so a position that does not fit never rules a candidate out: it only
-- decides between candidates (pair_composite).
CREATE OR REPLACE MACRO position_fits(pos_low, pos_high, b_pos) AS
    b_pos IS NULL OR pos_high IS NULL OR b_pos BETWEEN coalesce(pos_low, b_pos) AND pos_high;

-- may the bus event at a connector sequence position (`present`, of type b_type) be a child of model kind s_kind
-- (emission s_emission)? When the position reached no store, when the model gives its type the child's kind, or when
-- the model knows neither its type nor the child's kind. The connector sends events no API child stands for
-- (Attachment Linked to Comment) and Zendesk does not guarantee the order, so a position holding another kind's event
-- is not the child's (sequences.sql, settlements.sql).
CREATE OR REPLACE MACRO position_kind_fits(present, b_type, s_kind, s_emission) AS
    NOT present
    OR (b_type, s_kind) IN (SELECT (bus_type, api_kind) FROM emission_model WHERE bus_type IS NOT NULL)
    OR coalesce(s_emission = 'unknown' AND b_type NOT IN (SELECT bus_type FROM emission_model
                                                          WHERE bus_type IS NOT NULL), false);

-- the family composite candidates are paired within (pair_candidates): the bus event's payload family with [match]
-- both_families, else one for every candidate (hop_a.sql, settlements.sql)
CREATE OR REPLACE MACRO pairing_family(b_family, both_families) AS
    CASE WHEN both_families THEN coalesce(b_family, '') ELSE '' END;

-- hop A, pairing: composite candidates (table `cand`: source_id, eb_id, ticket_id, kind, family, s_time, b_time,
-- b_pos) made one-to-one within each `family`: one value for every candidate, or, with [match] both_families, the
-- bus event's payload family (hop_a.sql), so that an event both the connector and the webhook route carried is paired
-- once in each. A candidate that is the only one on both sides is 'composite'. The others are 'ambiguous', in groups:
-- a (ticket, kind)'s candidates whose time spans (event to id, at whole seconds) overlap, one after another (`grp`:
-- no candidate joins two groups, so an ambiguity on the ticket at another time leaves a group alone). A group with as
-- many events as ids, each the candidate of the one at its rank in time order, is paired in that order: it pairs
-- everything (and, in one dimension, with the least total distance). Any other group is paired with their mutually
-- nearest candidate in time (at whole seconds), the rest in time order; nearest first could take the id an earlier
-- event needs and leave two unpaired where time order pairs both. Pairing is one-to-one, so an ambiguous group can
-- never hide a loss. Returns source_id, eb_id, match_kind and family.
-- time order within a group (`r`, from 1): of Zendesk events (table `t`: source_id, ticket_id, kind, family, grp,
-- s_time) and of bus events (table `t`: eb_id, ticket_id, kind, family, grp, b_time, b_pos) at the API's whole seconds
CREATE OR REPLACE MACRO events_in_time_order(t) AS TABLE
SELECT *, row_number() OVER (PARTITION BY ticket_id, kind, family, grp
                             ORDER BY s_time, try_cast(source_id AS BIGINT), source_id) AS r
FROM query_table(t);
CREATE OR REPLACE MACRO ids_in_time_order(t) AS TABLE
SELECT *, row_number() OVER (PARTITION BY ticket_id, kind, family, grp
                             ORDER BY date_trunc('second', b_time), b_pos, b_time, eb_id) AS r
FROM query_table(t);

CREATE OR REPLACE MACRO pair_candidates(cand) AS TABLE
WITH c AS (
    SELECT * FROM query_table(cand)
), multi_s AS (
    -- candidates that are not one-to-one are few: find them with two narrow counts instead of windows over all
    SELECT source_id, family FROM c GROUP BY source_id, family HAVING count(*) > 1
), multi_b AS (
    SELECT eb_id FROM c GROUP BY eb_id HAVING count(*) > 1
), unique_pairs AS (
    SELECT source_id, eb_id, 'composite' AS match_kind, family FROM c
    WHERE NOT EXISTS (SELECT 1 FROM multi_s m WHERE m.source_id = c.source_id AND m.family = c.family)
      AND eb_id NOT IN (SELECT eb_id FROM multi_b)
), spans AS (
    -- Distance at the API's resolution: audit times are whole seconds, bus times carry the fraction after it.
    SELECT *, abs(epoch(date_trunc('second', b_time)) - epoch(s_time)) AS d,
           least(s_time, date_trunc('second', b_time)) AS lo, greatest(s_time, date_trunc('second', b_time)) AS hi
    FROM c
    WHERE EXISTS (SELECT 1 FROM multi_s m WHERE m.source_id = c.source_id AND m.family = c.family)
       OR eb_id IN (SELECT eb_id FROM multi_b)
), all_amb AS (
    -- a group starts where a candidate's span begins after every earlier one's has ended (an event's or an id's
    -- candidates all span its time, so they are in one group)
    SELECT * EXCLUDE (lo, hi, starts),
           sum(starts) OVER (PARTITION BY ticket_id, kind, family ORDER BY lo, hi, source_id, eb_id
                             ROWS UNBOUNDED PRECEDING) AS grp
    FROM (SELECT *, coalesce(lo > max(hi) OVER (PARTITION BY ticket_id, kind, family
                                                ORDER BY lo, hi, source_id, eb_id
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false)::INTEGER
                        AS starts
          FROM spans)
), all_s AS (
    SELECT DISTINCT source_id, ticket_id, kind, family, grp, s_time FROM all_amb
), all_b AS (
    SELECT DISTINCT eb_id, ticket_id, kind, family, grp, b_time, b_pos FROM all_amb
), order_s AS (
    SELECT * FROM events_in_time_order('all_s')
), order_b AS (
    SELECT * FROM ids_in_time_order('all_b')
), in_order AS (
    -- the groups whose events and ids pair whole in time order: as many of each (a rank without its other side joins
    -- no candidate), every rank pair a candidate
    SELECT ticket_id, kind, family, grp
    FROM order_s s
    FULL JOIN order_b b USING (ticket_id, kind, family, grp, r)
    LEFT JOIN all_amb a ON a.source_id = s.source_id AND a.eb_id = b.eb_id
    GROUP BY ticket_id, kind, family, grp
    HAVING bool_and(a.source_id IS NOT NULL)
), amb AS (
    SELECT * FROM all_amb
    WHERE (ticket_id, kind, family, grp) NOT IN (SELECT (ticket_id, kind, family, grp) FROM in_order)
), nearest AS (
    SELECT *,
           row_number() OVER (PARTITION BY source_id, family ORDER BY d, b_pos, eb_id) AS rank_for_s,
           row_number() OVER (PARTITION BY eb_id ORDER BY d, try_cast(source_id AS BIGINT), source_id) AS rank_for_b,
           count(*) OVER (PARTITION BY source_id, family, d) AS ties_s,
           count(*) OVER (PARTITION BY eb_id, d) AS ties_b
    FROM amb
), mutual AS (
    -- each is the other's one nearest candidate: paired on time, whatever else in the group was lost
    SELECT source_id, eb_id, family FROM nearest
    WHERE rank_for_s = 1 AND rank_for_b = 1 AND ties_s = 1 AND ties_b = 1
), amb_s AS (
    SELECT DISTINCT source_id, ticket_id, kind, family, grp, s_time FROM amb a
    WHERE NOT EXISTS (SELECT 1 FROM mutual m WHERE m.source_id = a.source_id AND m.family = a.family)
), amb_b AS (
    SELECT DISTINCT eb_id, ticket_id, kind, family, grp, b_time, b_pos FROM amb
    WHERE eb_id NOT IN (SELECT eb_id FROM mutual)
), ranked_s AS (
    SELECT * FROM events_in_time_order('amb_s')
), ranked_b AS (
    SELECT * FROM ids_in_time_order('amb_b')
)
SELECT * FROM unique_pairs
UNION ALL
SELECT s.source_id, b.eb_id, 'ambiguous', s.family
FROM order_s s JOIN order_b b USING (ticket_id, kind, family, grp, r)
WHERE (s.ticket_id, s.kind, s.family, s.grp) IN (SELECT (ticket_id, kind, family, grp) FROM in_order)
UNION ALL
SELECT source_id, eb_id, 'ambiguous' AS match_kind, family FROM mutual
UNION ALL
SELECT s.source_id, b.eb_id, 'ambiguous', s.family
FROM ranked_s s
JOIN ranked_b b USING (ticket_id, kind, family, grp, r)
JOIN amb a ON a.source_id = s.source_id AND a.eb_id = b.eb_id;

-- hop A, composite pairing (table `cand`: pair_candidates' columns and `fits`, position_fits of the candidate) in two
-- rounds: the candidates whose position fits, paired as pair_candidates pairs; then, among the events and ids that
-- round left unpaired (in their family), every candidate on ticket, kind and time alone. A pairing of the second round
-- that the position contradicts is 'out_of_order' (queries/match_kinds.csv): the event reached the bus, only not at
-- the position the assumed order gives it -- calling it lost (and its bus event an orphan) would be a false loss.
CREATE OR REPLACE MACRO pair_composite(cand) AS TABLE
WITH c AS (
    SELECT * FROM query_table(cand)
), fitting AS (
    SELECT * EXCLUDE (fits) FROM c WHERE fits
), first_round AS (
    SELECT * FROM pair_candidates('fitting')
), rest AS (
    SELECT * EXCLUDE (fits) FROM c
    WHERE NOT EXISTS (SELECT 1 FROM first_round f WHERE f.source_id = c.source_id AND f.family = c.family)
      AND eb_id NOT IN (SELECT eb_id FROM first_round)
)
SELECT source_id, eb_id, match_kind FROM first_round
UNION ALL
SELECT p.source_id, p.eb_id, CASE WHEN c.fits THEN p.match_kind ELSE 'out_of_order' END
FROM pair_candidates('rest') p
JOIN c USING (source_id, eb_id);

-- one event under several EventBridge ids (table `bus`: bus_events, or the part of it a query can reach): a connector
-- event resent (same sequence id and position, and no two tickets or types among the copies: events of a sequence
-- that names several tickets may share a position, and are not copies) or a webhook delivered more than once (same
-- webhook event id, PIPELINE.md §1; it is not the API's child id, so such events match on the composite key). One
-- row per copy but the first (by id): matching sees the first only, and each copy is linked with it (hop_a.sql,
-- settlements.sql). Rare, so found with narrow counts.
CREATE OR REPLACE MACRO bus_copies(bus) AS TABLE
WITH b AS (
    SELECT * FROM query_table(bus)
), resent AS (
    SELECT sequence_id, sequence_position, min(eb_id) AS first_eb
    FROM b
    WHERE family = 'legacy' AND sequence_id IS NOT NULL AND sequence_position IS NOT NULL
    GROUP BY sequence_id, sequence_position
    HAVING count(*) > 1 AND min(ticket_id) IS NOT DISTINCT FROM max(ticket_id)
       AND min(event_type) IS NOT DISTINCT FROM max(event_type)
), redelivered AS (
    SELECT zendesk_key, min(eb_id) AS first_eb
    FROM b
    WHERE family = 'webhook' AND zendesk_key IS NOT NULL
    GROUP BY zendesk_key HAVING count(*) > 1
)
SELECT b.eb_id, r.first_eb
FROM b JOIN resent r USING (sequence_id, sequence_position)
WHERE b.family = 'legacy' AND b.eb_id <> r.first_eb
UNION ALL
SELECT b.eb_id, r.first_eb
FROM b JOIN redelivered r USING (zendesk_key)
WHERE b.family = 'webhook' AND b.eb_id <> r.first_eb;

-- the links of the copies (table `copies`: bus_copies) of linked ids (table `links`: source_id, eb_id, match_kind):
-- each copy linked as its first is. A webhook's copies share its event id, so an exact link reached each already.
CREATE OR REPLACE MACRO copy_links(links, copies) AS TABLE
SELECT l.source_id, c.eb_id, l.match_kind
FROM query_table(links) l JOIN query_table(copies) c ON c.first_eb = l.eb_id
WHERE l.match_kind <> 'exact';

-- what the stores hold of an expected event, from its links (table `links`: source_id, eb_id, match_kind) to
-- the bus events (table `bus`: bus_events, or the part of it the links can reach), and what `reconcile recover` sent
-- for it (table `recoveries`, from the recovery journal): one row per linked source_id. An event linked to one id
-- (nearly all) takes that id's row as it is; only events linked to several ids are summed over them (counts stay
-- BIGINT), with the weakest of their links' kinds (queries/match_kinds.csv order: a guess among them shows; one of its
-- own, settlements' `carried`, only when every link is) and how many payload families
-- carried them (`families`: 2 when both the connector and the webhook route put the event on the bus, hop_a.sql).
CREATE OR REPLACE MACRO bus_facts(links, bus) AS TABLE
WITH l AS (
    SELECT * FROM query_table(links)
), multi AS (
    SELECT source_id FROM l GROUP BY source_id HAVING count(*) > 1
)
SELECT l.source_id, 1 AS eb_ids, 1 AS families, l.eb_id, NULL::VARCHAR[] AS other_eb_ids, l.match_kind,
       b.event_type AS bus_type,
       b.log_copies, b.sink_rows, b.sink_sequences,
       b.uncommitted_rows, b.replayed, b.dlq_kinesis, b.dlq_other, b.error_code, b.retry_condition,
       b.dlq_target, b.bus_at, b.sink_at, b.dlq_at,
       r.sent_at AS recovery_sent_at, r.route AS recovery_route, r.replay_name AS recovery_replay
FROM l
JOIN query_table(bus) b USING (eb_id)
LEFT JOIN recoveries r USING (eb_id)
WHERE l.source_id NOT IN (SELECT source_id FROM multi)
UNION ALL
SELECT l.source_id,
       count(*) AS eb_ids,
       count(DISTINCT b.family) AS families,
       min(l.eb_id) AS eb_id,
       list(l.eb_id::VARCHAR ORDER BY l.eb_id)[2:] AS other_eb_ids,  -- the ids besides eb_id: `trace` follows them all
       arg_max(l.match_kind, coalesce(v.ord, 0)) AS match_kind,  -- the weakest: a guess among them shows
       min(b.event_type) AS bus_type,
       sum(b.log_copies)::BIGINT AS log_copies,
       sum(b.sink_rows)::BIGINT AS sink_rows,
       sum(b.sink_sequences)::BIGINT AS sink_sequences,
       sum(b.uncommitted_rows)::BIGINT AS uncommitted_rows,
       bool_or(b.replayed) AS replayed,
       sum(b.dlq_kinesis)::BIGINT AS dlq_kinesis,
       sum(b.dlq_other)::BIGINT AS dlq_other,
       min(b.error_code) AS error_code,
       min(b.retry_condition) AS retry_condition,
       min(b.dlq_target) AS dlq_target,
       min(b.bus_at) AS bus_at,
       min(b.sink_at) AS sink_at,
       min(b.dlq_at) AS dlq_at,
       min(r.sent_at) AS recovery_sent_at,  -- the first send of a recovery of any of its ids
       arg_min(r.route, r.sent_at) AS recovery_route,
       arg_min(r.replay_name, r.sent_at) AS recovery_replay
FROM l
JOIN query_table(bus) b USING (eb_id)
LEFT JOIN recoveries r USING (eb_id)
LEFT JOIN match_vocab v ON v.match_kind = l.match_kind
WHERE l.source_id IN (SELECT source_id FROM multi)
GROUP BY l.source_id;

-- An EventBridge id's sink copies that count, from its `n` rows in the sink, `n_outside` of them in files Spark's commit
-- log does not list (PIPELINE.md §6; read as evidence, committed = false), and `outside_only` distinct Kinesis
-- sequence numbers among those that no committed row has (NULL when the id has one row). `outside_log` (run.py
-- outside_log, from [sink] honour_commit_log and retention): 'counted': readers ignore the log and see every copy.
-- 'leftover': readers honour the log and the job sets no retention, so a file outside the log is a failed or retried
-- batch's leftover, which they never see: no copy (an id found only there did not land for them). 'expired': the
-- job's `retention` option expires entries from the compacted log (their files stay), so a file outside the log is a
-- leftover (the same Kinesis records as the retry's committed file: no copy) or an expired entry: a row outside the
-- log counts once per Kinesis record no committed row holds, and an id with no committed row landed at least once.
-- (A record Spark committed twice, one copy since expired, thus counts once: it cannot be told from a leftover.)
-- sink_copies_outside: how many of the counted copies are outside the log ('leftover': the rows of an id found only
-- there, which count as none). An id with no sink row stays NULL.
-- outside_log_rows and outside_only_sequences are the aggregates of an id's sink rows these take.
CREATE OR REPLACE MACRO outside_log_rows(committed) AS count(*) FILTER (WHERE committed IS NOT DISTINCT FROM false);
CREATE OR REPLACE MACRO outside_only_sequences(sequence_number, committed) AS
    count(DISTINCT sequence_number) - count(DISTINCT sequence_number) FILTER (WHERE committed IS DISTINCT FROM false);
CREATE OR REPLACE MACRO sink_copies_outside(n, n_outside, outside_only, outside_log) AS
    CASE WHEN n IS NULL THEN NULL WHEN outside_log = 'counted' OR n_outside = 0 THEN n_outside
         WHEN outside_log = 'leftover' THEN CASE WHEN n = n_outside THEN n_outside ELSE 0 END
         ELSE greatest(coalesce(outside_only, n_outside), CASE WHEN n = n_outside THEN 1 ELSE 0 END) END;
CREATE OR REPLACE MACRO sink_copies(n, n_outside, outside_only, outside_log) AS
    CASE WHEN outside_log = 'counted' THEN n
         WHEN outside_log = 'leftover' THEN n - n_outside
         ELSE n - n_outside + sink_copies_outside(n, n_outside, outside_only, outside_log) END;
-- is a sink row a failed batch's leftover although files outside the commit log count ('expired': [sink] retention
-- set)? Its file is one no compaction can have expired (`unexpired_files`, $unexpired_files: the sink read's details,
-- sources/sink.py; a row's source_ref is its file, `#` and its row: a path may hold `#`), as in 'leftover' mode: its
-- rows are no copy (bus_events.sql) and prove no read of the stream (reach.sql)
CREATE OR REPLACE MACRO unexpired_leftover(committed, source_ref, outside_log, unexpired_files) AS
    CASE WHEN committed = false AND outside_log = 'expired'
         THEN regexp_replace(source_ref, '#[0-9]+$', '') IN (SELECT unnest(unexpired_files::VARCHAR[]))
         ELSE false END;
-- did an event reach the sink only in files outside the commit log (Spark's readers do not see it)? ('leftover': its
-- sink_rows are 0 and its uncommitted_rows those rows; an event of several ids may have both, and is then not)
CREATE OR REPLACE MACRO only_outside_log(sink_rows, uncommitted_rows, outside_log) AS
    coalesce(uncommitted_rows > 0
             AND (sink_rows = 0 OR (outside_log <> 'leftover' AND uncommitted_rows >= sink_rows)), false);
-- when an id's first copy landed, from its sink rows: in 'leftover' mode a row outside the log is no copy, so an id
-- found only there landed never (a recovery that lands later is then its first landing: landed_after)
CREATE OR REPLACE MACRO landed_at(observed_at, committed, outside_log) AS
    CASE WHEN outside_log = 'leftover' THEN min(observed_at) FILTER (WHERE committed IS DISTINCT FROM false)
         ELSE min(observed_at) END;

-- the verdict cascade, in priority order (docs/design.md, "Verdicts"). `linked`: some store holds an id linked to
-- the event; `age`: as_of - event time. Carried events pass the emission and the paired sequence position the state
-- kept (not whether the sequence is complete: they were judged pending with it once already).
-- Recovery (issue 16): an event whose first sink arrival is at or after the send of a recovery (`since_recovery`:
-- as_of - the send; `landed_after_recovery`) is 'recovered', or 'duplicated' when the sink holds more than one copy
-- (the recovery's and another: a late original, a send in doubt made again); one that landed before any recovery
-- keeps the verdict it has on its own; one sent but not landed is 'pending' until the horizon counted from the send,
-- then lost again. `retry_age`: as_of - when EventBridge's retries began, the later of the event time and the bus log's
-- first copy (`retry_start`): an event the bus received late is retried until the horizon past then, not past its
-- Zendesk time (one put on the bus two hours late was lost while EventBridge still retried it, never judged again).
CREATE OR REPLACE MACRO retry_start(event_time, bus_at) AS greatest(event_time, bus_at);
CREATE OR REPLACE MACRO verdict_of(linked, sink_rows, dlq_kinesis, age, hop_a_grace, horizon,
                                   excluded := false, emission := NULL, sequence_position := NULL,
                                   sequence_complete := NULL, since_recovery := NULL,
                                   landed_after_recovery := false, retry_age := NULL) AS
    CASE
        WHEN excluded THEN 'excluded'
        WHEN NOT linked AND emission = 'none' THEN 'not_emitted'
        WHEN NOT linked AND emission = 'unknown' THEN 'unverified'  -- a position no store has may be another event
        WHEN NOT linked AND sequence_position IS NULL AND sequence_complete THEN 'not_emitted'
        WHEN NOT linked THEN CASE WHEN age < hop_a_grace THEN 'pending' ELSE 'lost_before_bus' END
        WHEN sink_rows > 1 AND landed_after_recovery THEN 'duplicated'  -- the recovery's copy and another landed
        WHEN sink_rows > 0 AND landed_after_recovery THEN 'recovered'
        WHEN sink_rows > 1 THEN 'duplicated'
        WHEN sink_rows = 1 THEN 'delivered'
        WHEN since_recovery < horizon THEN 'pending'  -- a recovery sent, not landed yet
        WHEN dlq_kinesis > 0 THEN 'dead_lettered'
        WHEN coalesce(retry_age, age) < horizon THEN 'pending'
        ELSE 'lost_after_bus'
    END;

-- A loss is the absence of an event from what was read: found while a store it rests on was read only in part, not read
-- back to the event, or (before the bus) newer than where the bus log read ends, it is not final. loss_held_by gives
-- why for a loss verdict `found`, by its loss hop (queries/verdicts.csv): `before_bus` for a loss before the bus,
-- `after_bus` for one after it (completeness.unsettled: a sink read in part holds both, a bus log or DLQ read in part
-- only the first; the read-back's reach; beyond_dlq), and NULL otherwise. Such an event is judged 'pending'
-- (held_verdict), with what it would be and why not (held_cause), so the state carries it and a later run judges it
-- again. This window's events (verdicts.sql) and carried ones (settlements.sql) are held alike.
CREATE OR REPLACE MACRO loss_held_by(found, before_bus, after_bus) AS
    CASE WHEN found IN (SELECT verdict FROM verdict_vocab WHERE loss_hop = 'zendesk_to_bus') THEN before_bus
         WHEN found IN (SELECT verdict FROM verdict_vocab WHERE loss_hop = 'bus_to_sink') THEN after_bus END;
-- A loss before the bus of an event newer than where the bus log is proven to hold what the bus received, less hop
-- A's grace (`reach`, `why`: queries/reach.sql's bus_log_reach and bus_log_why, cross-joined by the caller; a scalar
-- subquery here would be correlated with every row): the log may yet hold it.
CREATE OR REPLACE MACRO beyond_bus_log(event_time, reach, why, grace) AS
    CASE WHEN event_time > reach - grace THEN why END;
-- A loss after the bus with no DLQ message is not final when the DLQ read cannot show there is none: it was read in
-- part (`in_part`, $dlq_in_part: completeness.dlq_in_part), or the event's retries may have run past what it holds
-- (`reach`, $dlq_reach: a DLQ archive's newest object; NULL for a live queue, read as it is now). A dead letter
-- would make it dead_lettered. EventBridge gives up on an event within `horizon` of it ($horizon: the rule's
-- MaximumEventAgeInSeconds and the margin before the window).
CREATE OR REPLACE MACRO beyond_dlq(found, event_time, reach, horizon, in_part) AS
    CASE WHEN found = 'lost_after_bus' THEN coalesce(in_part, CASE WHEN event_time + horizon > reach
         THEN 'the DLQ archive holds messages written until ' || strftime(reach, '%Y-%m-%dT%H:%M:%SZ')
              || ', and its retries may have gone on until ' || strftime(event_time + horizon, '%Y-%m-%dT%H:%M:%SZ')
         END) END;
-- A loss after the bus is not final while Spark may not yet have read it from the stream: EventBridge may have put
-- it there until its retries ended (`retry_start` + `horizon`), later than the sink's newest arrival (`reach`,
-- queries/reach.sql sink_reach: a Spark job stopped or behind), and the stream keeps a record for `retention` ([sink]
-- stream_retention). Past that, unread, the stream dropped it: a loss either way.
CREATE OR REPLACE MACRO beyond_sink(found, retry_start, reach, horizon, retention, as_of) AS
    CASE WHEN found = 'lost_after_bus' AND (reach IS NULL OR retry_start + horizon > reach)
              AND as_of < retry_start + horizon + retention
         THEN coalesce('the sink holds what the stream received until ' || strftime(reach, '%Y-%m-%dT%H:%M:%SZ')
                       || ' (its newest row''s arrival)', 'no row in the sink has an arrival time')
              || ', and EventBridge may have put it on the stream until '
              || strftime(retry_start + horizon, '%Y-%m-%dT%H:%M:%SZ') || ': Spark may not have read it yet (the '
              || 'stream keeps it until ' || strftime(retry_start + horizon + retention, '%Y-%m-%dT%H:%M:%SZ')
              || ': [sink] stream_retention)'
    END;
CREATE OR REPLACE MACRO held_verdict(found, held_by) AS
    CASE WHEN held_by IS NOT NULL THEN 'pending' ELSE found END;
-- `settled_by`: what would settle it, when the next run will not (a carried event older than every later run's read)
CREATE OR REPLACE MACRO held_cause(found, held_by, settled_by := NULL) AS
    'would be ' || found || ', but ' || held_by || ': ' || coalesce(settled_by, 'judged again by the next run');

-- did the sink's first copy of an event arrive at or after a recovery's send? (an unknown arrival time counts: the
-- send found it absent)
-- The send's time is the applier's clock, taken before the call; the arrival is Kinesis's (approximateArrivalTimestamp,
-- stamped while it handles the call): 5 s of slack keeps a few seconds' skew between the two clocks from making a
-- recovery look landed before it was sent. (The apply re-read the sink just before sending: the event was not there.)
CREATE OR REPLACE MACRO landed_after(recovery_sent_at, sink_at) AS
    coalesce(recovery_sent_at IS NOT NULL AND (sink_at IS NULL OR sink_at >= recovery_sent_at - INTERVAL 5 SECOND),
             false);

-- why an event is duplicated: both payload families carried it (the connector and the webhook route both ran: each
-- landed), else several EventBridge ids did (a redelivered webhook or connector event), else a copy was replayed from
-- an archive, else the sink holds distinct Kinesis sequence numbers (redelivery), else one record was written more
-- than once (a re-batched Spark file).
CREATE OR REPLACE MACRO duplicate_cause(eb_ids, replayed, sink_sequences, families := 1) AS
    CASE
        WHEN families > 1 THEN 'both families'
        WHEN eb_ids > 1 THEN 'redelivery'
        WHEN replayed THEN 'replay'
        WHEN sink_sequences > 1 THEN 'redelivery'
        ELSE 're-batched'
    END;

-- the cause shown with a verdict: the evidence behind it, in words.
-- `recovery_how`: how a recovery re-sent it ('re-put' or 'replay <name>'), when one did.
CREATE OR REPLACE MACRO cause_of(verdict, eb_id, eb_ids, replayed, sink_sequences, error_code, model_kind,
                                 emission := NULL, sequence_id := NULL, sequence_total := NULL,
                                 sequence_position := NULL, recovery_how := NULL, outside_log := false,
                                 landed_after_recovery := false, families := 1) AS
    CASE WHEN recovery_how IS NOT NULL AND verdict = 'recovered' THEN recovery_how || ' landed'
         WHEN recovery_how IS NOT NULL AND verdict = 'duplicated' AND landed_after_recovery
              THEN recovery_how || ' landed, and so did another copy ('
                   || duplicate_cause(eb_ids, replayed, sink_sequences, families := families) || ')'
         WHEN recovery_how IS NOT NULL AND verdict = 'pending' THEN recovery_how || ' sent, not landed yet'
    ELSE CASE verdict
        WHEN 'delivered' THEN CASE WHEN outside_log THEN 'only in files outside Spark''s commit log (an entry the '
                                   || 'sink''s retention expired, or a retried batch''s leftover): Spark''s readers do '
                                   || 'not see it' END
        WHEN 'duplicated' THEN duplicate_cause(eb_ids, replayed, sink_sequences, families := families)
        WHEN 'dead_lettered' THEN coalesce(error_code, 'unknown error')
        WHEN 'lost_after_bus' THEN CASE WHEN outside_log THEN 'only in files outside Spark''s commit log, a failed '
                                   || 'or retried batch''s leftover (no [sink] retention, or written too recently '
                                   || 'for it to have expired the entry): Spark''s readers do not see it, and no DLQ '
                                   || 'message' ELSE 'no sink row, no DLQ message' END
            -- the bus event is lost whichever event it is; that it is this child's rests on an assumed order
            || CASE WHEN emission = 'unknown' AND sequence_position IS NOT NULL
                    THEN ' (the event at position ' || sequence_position || ' of sequence ' || sequence_id
                         || ', paired with this kind the model does not know by assumed order: it may be one no API '
                         || 'child stands for)' ELSE '' END
        WHEN 'lost_before_bus' THEN CASE WHEN sequence_position IS NOT NULL
            THEN 'sequence ' || sequence_id || ' had ' || sequence_total || ' events, position '
                 || sequence_position || ' never reached any store'
            ELSE 'not in any AWS store' END
        WHEN 'unverified' THEN 'kind ' || model_kind || ' is not in the emission model: add a line to '
                               || '[match] emission_model (reconcile calibrate suggests one)'
                               || CASE WHEN sequence_position IS NOT NULL
                                  THEN '. Position ' || sequence_position || ' of sequence ' || sequence_id
                                       || ', where it would be, never reached any store: it, or an event no API '
                                       || 'child stands for, was lost' ELSE '' END
        WHEN 'not_emitted' THEN CASE WHEN emission = 'none' THEN 'the emission model says ' || model_kind
                                          || ' never reaches the bus'
            ELSE 'sequence ' || sequence_id || ' (' || sequence_total || ' events) is complete without it' END
        WHEN 'pending' THEN CASE WHEN eb_id IS NULL THEN 'not yet on the bus' ELSE 'within retry horizon' END
    END || CASE WHEN recovery_how IS NOT NULL AND verdict IN ('dead_lettered', 'lost_after_bus')
                THEN ', and the ' || recovery_how || ' sent did not land within the horizon' ELSE '' END
    END;

-- did a recovery's copy land? recovered, or a duplicate the recovery's copy is one of (an unknown arrival time
-- counts, as in landed_after: the send found the event absent)
CREATE OR REPLACE MACRO recovery_landed(verdict, sink_at, recovery_sent_at) AS
    verdict = 'recovered' OR (verdict = 'duplicated' AND landed_after(recovery_sent_at, sink_at));
-- a landed recovery's lag: its sink arrival less the recovery's send (NULL for any other verdict, or when the sink
-- gave no arrival time)
CREATE OR REPLACE MACRO recovery_lag(verdict, sink_at, recovery_sent_at) AS
    CASE WHEN recovery_landed(verdict, sink_at, recovery_sent_at) AND sink_at IS NOT NULL
         THEN greatest(0, epoch(sink_at) - epoch(recovery_sent_at)) END;  -- within the clocks' slack: 0

-- how a recovery re-sent an event, in words (cause_of's recovery_how)
CREATE OR REPLACE MACRO recovery_how(route, replay_name) AS
    CASE WHEN route IS NULL THEN NULL WHEN route = 'replay' THEN 'replay ' || replay_name ELSE 're-put' END;
