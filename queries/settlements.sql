-- settlements: pending events carried in from earlier windows (table `carried`), judged again against this run's stores
-- by the rules this window's events are judged by (queries/rules.sql): delivered late (with lateness), duplicated,
-- dead-lettered, lost, or still pending, with the cause. Events still missing the bus are re-matched with hop A's
-- candidate tests (exact on the Zendesk event id, else composite with the carried position as the highest possible one:
-- kinds the model does not know may or may not have taken one before it), paired one-to-one among the carried events,
-- never with an id already linked to another event (by an earlier run or by this run's hop A); an event an earlier run
-- paired with a connector sequence position (sequences.sql) is linked to the id now at that position, when its kind
-- fits (position_kind_fits). The emission facts it was judged by go to verdict_of again (a state older than them: the
-- model's): a kind the model does not know, linked to no bus event, is `unverified`, never lost. Facts are summed
-- per source_id (a Zendesk event id belongs to one window). A carried event can settle as `recovered`
-- (recovery_lag_s) like this window's events. A loss (a verdict with a loss hop) rests on what the stores do not
-- hold: when a store the loss rests on was not read whole ($unsettled_<hop>, completeness.unsettled), the sink was
-- not read back to the event ($sink_read_start: [window] carry_back), or (a loss before the bus) the event is newer
-- than where the bus log read ends (beyond_bus_log) or older than where it starts while within the retry horizon, a
-- carried event found lost stays pending (`held`: the state carries it again), while what the stores do hold settles
-- it as usual. An unpaired carried event whose connector sequence is now complete without it (`seq_done`) is
-- `not_emitted`, as verdicts.sql judges the window's events.
--
-- Two tables of their own first, each read more than once below: the ids an earlier run linked to a carried event
-- (its first and its copies'; an id that is no UUID, kept by an older version, can match no record), and the bus
-- events a carried event can link to (by its Zendesk event id, its ticket or its EventBridge id): few. In
-- partitioned judging bus_events is the split's Arrow files, which give DuckDB no row count, and a plain join or IN
-- with the carried events has it build its hash table of every bus event of the day (docs/design.md, partitioned
-- judging). `coalesce(x IN (...), false)` is a MARK join, which DuckDB builds on the subquery (the carried events).
-- As a CTE of the statement below, the scan ran out of memory once a second consumer read what is built on it. The
-- columns are those exact_candidate and composite_candidate compare (queries/rules.sql), and the carried links' ids.
CREATE OR REPLACE TEMP TABLE carried_links AS
SELECT * FROM (
    SELECT source_id, eb_id FROM carried
    UNION
    SELECT source_id, try_cast(id AS UUID) AS eb_id
    FROM (SELECT source_id, unnest(other_eb_ids) AS id FROM carried WHERE other_eb_ids IS NOT NULL)
) WHERE eb_id IS NOT NULL;
CREATE OR REPLACE TEMP TABLE settle_near AS
SELECT * FROM bus_events
WHERE coalesce(zendesk_key IN (SELECT zendesk_key FROM carried), false)
   OR coalesce(ticket_id IN (SELECT ticket_id FROM carried), false)
   OR coalesce(eb_id IN (SELECT eb_id FROM carried_links), false);
CREATE OR REPLACE TABLE settlements AS
WITH kept AS (
    -- a state written before the emission was kept (5ecc4fc) gives none: the model's, as the run that held it had it
    SELECT * REPLACE (coalesce(emission, emission_of(kind)) AS emission) FROM carried
), open AS (
    SELECT * FROM kept WHERE eb_id IS NULL
), matchable AS MATERIALIZED (
    -- the carried events hop A's candidate tests are run for: those not linked yet, and with [match] both_families
    -- those linked in one payload family only so far (`linked_in`)
    SELECT * FROM kept WHERE eb_id IS NULL OR $both_families
), copies AS (
    SELECT * FROM bus_copies('settle_near')
), members AS (
    -- every id of a copy group (rules.sql bus_copies: a connector resend, a webhook redelivery, a replay under a new
    -- id), with its group's first
    SELECT eb_id, first_eb FROM copies
    UNION SELECT first_eb, first_eb FROM copies
), carried_copies AS (
    -- the other ids of a carried link's copy group, either way round (the new copy may be its group's first): a
    -- copy that landed under a new id delivers the event an earlier run linked (it was settled lost after the bus,
    -- or dead-lettered, its landed copy counted nowhere, where one pass over the same stores says delivered)
    SELECT DISTINCT l.source_id, g.eb_id, 'carried' AS match_kind
    FROM carried_links l
    JOIN members m ON m.eb_id = l.eb_id
    JOIN members g ON g.first_eb = m.first_eb
    WHERE NOT EXISTS (SELECT 1 FROM carried_links k WHERE k.source_id = l.source_id AND k.eb_id = g.eb_id)
), taken AS (
    -- ids already linked to an event: by an earlier run to a carried event (and its copies'), or to another event of
    -- its ticket (the carried event's claimed_ids: settled then, so no carried event names them), or by this run's
    -- hop A
    SELECT source_id, eb_id FROM carried_links
    UNION ALL SELECT source_id, eb_id FROM carried_copies
    UNION ALL SELECT '' AS source_id, try_cast(id AS UUID) AS eb_id
              FROM (SELECT unnest(claimed_ids) AS id FROM carried WHERE claimed_ids IS NOT NULL)
    UNION ALL SELECT source_id, eb_id FROM hop_a
), exact AS (
    SELECT DISTINCT c.source_id, b.eb_id, 'exact' AS match_kind
    FROM open c
    JOIN settle_near b ON exact_candidate(b.family, b.zendesk_key, c.zendesk_key)
), linked_in AS (
    -- with [match] both_families, the payload families a carried event is linked in already (by an earlier run, or
    -- exactly now): it is paired in each other family, as hop_a.sql pairs the window's events (none without it)
    SELECT l.source_id, list(DISTINCT coalesce(b.family, '')) AS families
    FROM (SELECT source_id, eb_id FROM carried_links WHERE $both_families
          UNION ALL SELECT source_id, eb_id FROM exact WHERE $both_families) l
    JOIN (SELECT eb_id, family FROM settle_near
          WHERE $both_families AND (coalesce(eb_id IN (SELECT eb_id FROM carried_links), false)
                                    OR coalesce(eb_id IN (SELECT eb_id FROM exact), false))) b USING (eb_id)
    GROUP BY l.source_id
), cand AS (
    SELECT DISTINCT c.source_id, b.eb_id, c.ticket_id, model_kind(c.kind) AS kind, c.event_time AS s_time,
           b.event_time AS b_time, b.sequence_position AS b_pos,
           pairing_family(b.family, $both_families) AS family,
           position_fits(NULL, c.position, b.sequence_position) AS fits
    FROM matchable c
    JOIN emission_model k ON k.api_kind = model_kind(c.kind)
    JOIN settle_near b
      ON b.event_type = k.bus_type
     AND composite_candidate(c.ticket_id, model_kind(c.kind), c.event_time,
                             b.ticket_id, k.api_kind, b.event_time, $tolerance_s)
    LEFT JOIN linked_in f ON f.source_id = c.source_id
    WHERE coalesce(NOT list_contains(f.families, coalesce(b.family, '')),
                   c.eb_id IS NULL AND c.source_id NOT IN (SELECT source_id FROM exact))
      AND b.eb_id NOT IN (SELECT eb_id FROM exact)
      AND b.eb_id NOT IN (SELECT eb_id FROM copies)
      AND NOT EXISTS (SELECT 1 FROM taken t WHERE t.eb_id = b.eb_id AND t.source_id <> c.source_id)
), composite AS (
    SELECT * FROM pair_composite('cand')
), sequenced AS (
    -- the position an earlier run paired the event with, now held by a store (the lowest id there, as sequences.sql)
    SELECT c.source_id, min(b.eb_id) AS eb_id, 'sequence' AS match_kind
    FROM open c
    JOIN settle_near b ON b.sequence_id = c.sequence_id AND b.sequence_position = c.sequence_position
               AND position_kind_fits(true, b.event_type, model_kind(c.kind), c.emission)
    WHERE c.source_id NOT IN (SELECT source_id FROM exact) AND c.source_id NOT IN (SELECT source_id FROM composite)
      AND b.eb_id NOT IN (SELECT eb_id FROM exact) AND b.eb_id NOT IN (SELECT eb_id FROM composite)
      AND b.eb_id NOT IN (SELECT eb_id FROM copies)
      AND NOT EXISTS (SELECT 1 FROM taken t WHERE t.eb_id = b.eb_id AND t.source_id <> c.source_id)
    GROUP BY c.source_id
), links AS (
    SELECT source_id, eb_id, 'carried' AS match_kind FROM carried_links
    UNION ALL SELECT * FROM carried_copies
    UNION ALL SELECT * FROM exact
    UNION ALL SELECT * FROM composite
    UNION ALL SELECT * FROM copy_links('composite', 'copies')
    UNION ALL SELECT * FROM sequenced
), facts AS (
    SELECT * FROM bus_facts('links', 'settle_near')
), audit_seq AS (
    -- a carried event its run gave no sequence (it linked none of its update's events: no store held them then): the
    -- one this run's links give its audit's other carried events, when they give one (sequences.sql `align` gives the
    -- window's events their audit's alike)
    SELECT c.source_id, min(b.sequence_id) AS sequence_id
    FROM open c
    JOIN kept s ON s.window_key = c.window_key AND s.audit_id = c.audit_id AND s.source_id <> c.source_id
    JOIN facts f ON f.source_id = s.source_id
    JOIN settle_near b ON b.eb_id = f.eb_id
    WHERE c.sequence_id IS NULL AND b.sequence_id IS NOT NULL
    GROUP BY c.source_id
    HAVING count(DISTINCT b.sequence_id) = 1
), lone_audits AS (
    -- carried updates with no sequence none of whose carried events links now (a merge, a deletion: the connector's
    -- events are of kinds no child has), by ticket and second (sequences.sql `lone`, for the window's events)
    SELECT window_key, audit_id, any_value(ticket_id) AS ticket_id, min(event_time) AS at
    FROM kept
    WHERE audit_id IS NOT NULL
    GROUP BY window_key, audit_id
    HAVING bool_and(sequence_id IS NULL) AND bool_and(source_id IN (SELECT source_id FROM open))
       AND NOT bool_or(source_id IN (SELECT source_id FROM facts))
       -- no other audit of its ticket lay near it when it was judged (none kept: a state from before, not aligned)
       AND coalesce(bool_and(near_audits = 0), false)
), near_zendesk AS (
    -- this run's Zendesk events on those tickets (few)
    SELECT source_id, ticket_id, audit_id, event_time FROM zendesk
    WHERE coalesce(ticket_id IN (SELECT ticket_id FROM lone_audits), false) AND audit_id IS NOT NULL
), kept_links AS MATERIALIZED (
    -- the links this run made for the carried events on those tickets (an earlier run's are `carried`, no owning
    -- link: the sequence it found their update owns comes below)
    SELECT c.audit_id, l.eb_id, owning_link(l.match_kind) AS owning
    FROM kept c JOIN links l USING (source_id)
    WHERE coalesce(c.ticket_id IN (SELECT ticket_id FROM lone_audits), false) AND c.audit_id IS NOT NULL
), owner_links AS (
    -- this run's links of those tickets' events and of the carried ones, with the sequence each linked bus event
    -- carries, and the sequences an earlier run found the carried events' updates own (rules.sql sequence_owners)
    SELECT * FROM links_on_tickets('lone_audits', 'hop_a', 'settle_near')
    UNION ALL
    SELECT k.audit_id, b.sequence_id, k.owning, b.family
    FROM kept_links k
    JOIN (SELECT eb_id, sequence_id, family FROM settle_near
          WHERE coalesce(eb_id IN (SELECT eb_id FROM kept_links), false)) b USING (eb_id)
    UNION ALL
    SELECT audit_id, owner_sequence, true, 'legacy' FROM kept WHERE owner_sequence IS NOT NULL
), claimants AS MATERIALIZED (
    -- every audit of those tickets this run or the state knows, whatever its events, but one whose links show another
    -- sequence its own
    SELECT ticket_id, audit_id, event_time
    FROM (SELECT ticket_id, audit_id, event_time FROM near_zendesk
          UNION ALL SELECT ticket_id, audit_id, event_time FROM kept WHERE audit_id IS NOT NULL)
    WHERE audit_id NOT IN (SELECT audit_id FROM sequence_owners('owner_links'))
), lone_seq AS (
    -- such an update's one sequence on its ticket within the composite tolerance of its second none of whose events
    -- is linked (by an earlier run, this run's hop A or a carried event), when no other such update is as near it
    SELECT a.window_key, a.audit_id, u.sequence_id
    FROM lone_audits a
    JOIN (SELECT sequence_id, min(ticket_id) AS ticket_id, min(event_time) AS at
          FROM settle_near
          WHERE sequence_id IS NOT NULL
          GROUP BY sequence_id
          HAVING count(DISTINCT ticket_id) = 1
             AND NOT bool_or(coalesce(eb_id IN (SELECT eb_id FROM taken), false)
                             OR coalesce(eb_id IN (SELECT eb_id FROM links), false))) u
      ON u.ticket_id = a.ticket_id AND near_second(a.at, u.at, $tolerance_s)
    -- every claimant of the ticket counts as another update
    WHERE (SELECT count(DISTINCT s.audit_id) FROM claimants s
           WHERE s.ticket_id = u.ticket_id AND near_second(s.event_time, u.at, $tolerance_s)) = 1
    QUALIFY count(*) OVER (PARTITION BY a.window_key, a.audit_id) = 1
        AND count(*) OVER (PARTITION BY u.sequence_id) = 1
), seq_done AS (
    -- a carried event its connector sequence left unpaired (a sequence id, no position: sequences.sql), or paired
    -- with a position then missing that `sequenced` did not link it by (another kind's event holds it now): the
    -- sequence is complete without it when a store holds each of its positions 1..total (every event the connector
    -- made for the update reached the bus), as seq_units' `complete` is for the window's (which also counts a
    -- position the audit's own events are linked to: not a store's, so never one a run after it still sees missing)
    SELECT c.source_id, any_value(b.sequence_id) AS sequence_id, max(b.sequence_total) AS total
    FROM open c
    LEFT JOIN audit_seq a USING (source_id)
    LEFT JOIN lone_seq l ON l.window_key = c.window_key AND l.audit_id = c.audit_id
    JOIN settle_near b ON b.sequence_id = coalesce(c.sequence_id, a.sequence_id, l.sequence_id)
               AND b.sequence_position BETWEEN 1 AND b.sequence_total
    GROUP BY c.source_id
    HAVING min(b.sequence_total) = max(b.sequence_total) AND max(b.sequence_total) <= 10000
       AND count(DISTINCT b.sequence_position) = max(b.sequence_total)
), judged AS (
    SELECT c.window_key, c.source_id, c.kind, c.ticket_id, c.event_time,
           coalesce(f.eb_id, c.eb_id) AS eb_id,
           -- a dead letter a run that held it read counts as this run's: the queue may have dropped it since
           verdict_of(f.source_id IS NOT NULL OR c.eb_id IS NOT NULL, coalesce(f.sink_rows, 0),
                      greatest(coalesce(f.dlq_kinesis, 0), coalesce(c.dlq_kinesis, 0)), $as_of - c.event_time,
                      $hop_a_grace, $horizon,
                      excluded := is_excluded(c.kind), emission := c.emission,
                      -- the position an earlier run paired it with holds another kind's event now (else
                      -- `sequenced` linked it): with every position held, it was no position of the update
                      sequence_position := CASE WHEN d.source_id IS NULL THEN c.sequence_position END,
                      sequence_complete := d.source_id IS NOT NULL, since_recovery := $as_of - f.recovery_sent_at,
                      landed_after_recovery := landed_after(f.recovery_sent_at, f.sink_at),
                      retry_age := $as_of - retry_start(c.event_time, least(f.bus_at, c.bus_at))) AS found,
           epoch(f.sink_at) - epoch(c.event_time) AS lateness_s,
           greatest(coalesce(f.dlq_kinesis, 0), coalesce(c.dlq_kinesis, 0)) AS dlq_kinesis,
           f.eb_ids, f.families, f.replayed, f.sink_sequences, coalesce(f.error_code, c.error_code) AS error_code,
           model_kind(c.kind) AS model_kind,
           only_outside_log(f.sink_rows, f.uncommitted_rows, $outside_log) AS outside_log,
           -- the first log copy this run reads or an earlier run kept (this run's read may start after it)
           f.sink_at, least(f.bus_at, c.bus_at) AS bus_at, f.recovery_sent_at,
           recovery_how(f.recovery_route, f.recovery_replay) AS recovery_how,
           c.emission, coalesce(c.sequence_id, d.sequence_id) AS sequence_id, d.total AS sequence_total
    FROM kept c
    LEFT JOIN facts f USING (source_id)
    LEFT JOIN seq_done d USING (source_id)
), held AS (
    SELECT j.*, loss_held_by(found, coalesce($unsettled_zendesk_to_bus, unread,
                                             beyond_bus_log(event_time, r.bus_log_reach, r.bus_log_why, $hop_a_grace),
                                             before_bus_read),
                             coalesce($unsettled_bus_to_sink, unread,
                                      beyond_dlq(found, retry_start(event_time, bus_at), $dlq_reach, $horizon,
                                                 $dlq_in_part),
                                      beyond_sink(found, retry_start(event_time, bus_at), r.sink_reach, $horizon,
                                                  $stream_retention, $as_of))) AS held_by
    FROM (SELECT *, CASE WHEN event_time < $sink_read_start
                         THEN 'the sink was not read back to it ([window] carry_back)' END AS unread,
                    -- not on the bus as far as this run reads it back, and still within EventBridge's retries: it
                    -- may be on the bus, and land yet (past the horizon it is a loss either way: the cause below)
                    CASE WHEN event_time < $bus_read_start AND $as_of - event_time < $horizon
                         THEN 'this run reads the bus log from ' || strftime($bus_read_start, '%Y-%m-%dT%H:%M:%SZ')
                              || ', after it, and it is within the retry horizon' END AS before_bus_read
          FROM judged) j
    CROSS JOIN reach r
)
SELECT window_key, source_id, kind, ticket_id, event_time, eb_id, held_verdict(found, held_by) AS verdict,
       CASE WHEN held_by IS NOT NULL THEN found END AS would_be, lateness_s,
       CASE WHEN held_by IS NOT NULL THEN held_cause(found, held_by, settled_by := CASE WHEN held_by = unread THEN
                'no later run reads the sink back to it either: raise [window] carry_back past it, or re-run its '
                || 'window, to settle it' END)
            -- the sink is read back to a carried event, the bus log is read over the window's range
            -- ($bus_read_start: Window.read_start): a loss, at a hop this run cannot tell
            WHEN found = 'lost_before_bus' AND event_time < $bus_read_start
            THEN 'not in the sink or the DLQ, and this run reads the bus log from '
                 || strftime($bus_read_start, '%Y-%m-%dT%H:%M:%SZ') || ', after it: it may have reached the bus (lost '
                 || 'after it then)'
            ELSE cause_of(found, eb_id, eb_ids, replayed, sink_sequences, error_code, model_kind, emission := emission,
                          sequence_id := sequence_id, sequence_total := sequence_total,
                          recovery_how := recovery_how, outside_log := outside_log,
                          landed_after_recovery := landed_after(recovery_sent_at, sink_at),
                          families := families) END AS cause,
       recovery_lag(found, sink_at, recovery_sent_at) AS recovery_lag_s,
       recovery_landed(found, sink_at, recovery_sent_at) AS recovery_landed,
       -- the dead letters read for it so far: state.record keeps them with an event held again (held_dead_letters)
       dlq_kinesis, error_code
FROM held;
