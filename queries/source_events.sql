-- source_events: one row per Zendesk child event from the zendesk ledger, with what the emission model
-- (table emission_model, docs/design.md) expects of it on the bus: its model kind, its emission (child: one bus
-- event; audit: one bus event for all such children of its audit; none: never on the bus; unknown: the model does
-- not list the kind), the expected bus event it belongs to (expected_id: the child standing for that bus event) and
-- that event's possible sequence positions (pos_low..pos_high: the rank among its audit's expected bus events, with
-- and without the unknown kinds, which may or may not take a position). "In window" is decided by the Zendesk event
-- time; events up to zendesk_reach($tolerance_s) outside it (queries/rules.sql) are kept (in_window false) so the bus
-- events they caused are matched to them rather than counted as orphans or taken by another event, but they are not
-- judged.
CREATE OR REPLACE MACRO model_kind(k) AS
    CASE WHEN k IN (SELECT api_kind FROM emission_model) THEN k
         WHEN regexp_full_match(k, 'Change:[0-9]+') THEN 'Change:<custom field id>'
         ELSE k END;
-- what the model expects of a kind on the bus (child, audit, none), or 'unknown' when it does not list it; also what
-- settlements.sql gives a carried event a state older than the emission facts kept none of
CREATE OR REPLACE MACRO emission_of(k) AS
    coalesce((SELECT any_value(cardinality) FROM emission_model WHERE api_kind = model_kind(k)), 'unknown');
-- excluded ([exclude] event_types, table excluded_kinds) by its kind or its model kind: `Change:<custom field id>`
-- excludes every custom field; settlements.sql asks it of a carried event too (the config may have changed since)
CREATE OR REPLACE MACRO is_excluded(k) AS
    coalesce(k IN (SELECT kind FROM excluded_kinds) OR model_kind(k) IN (SELECT kind FROM excluded_kinds), false);

CREATE OR REPLACE TABLE source_events AS
WITH in_range AS NOT MATERIALIZED (
    SELECT source_id, zendesk_key, ticket_id, event_type, event_time, audit_id, source_ref FROM zendesk
    WHERE event_time >= $window_start - zendesk_reach($tolerance_s)
      AND event_time < $window_end + zendesk_reach($tolerance_s)
), repeated AS (
    -- an event read twice (overlapping pages): rare, so only these rows pay for the aggregation
    SELECT source_id FROM in_range WHERE source_id IS NOT NULL GROUP BY source_id HAVING count(*) > 1
), dedup AS (
    SELECT source_id, zendesk_key, ticket_id, event_type AS kind, event_time, audit_id, source_ref
    FROM in_range
    WHERE source_id IS NOT NULL AND source_id NOT IN (SELECT source_id FROM repeated)
    UNION ALL
    SELECT source_id,
           any_value(zendesk_key) AS zendesk_key,
           any_value(ticket_id) AS ticket_id,
           any_value(event_type) AS kind,
           min(event_time) AS event_time,
           any_value(audit_id) AS audit_id,
           min(source_ref) AS source_ref
    FROM in_range
    WHERE source_id IS NULL OR source_id IN (SELECT source_id FROM repeated)
    GROUP BY source_id
), kinds AS (
    -- the model is applied once per distinct kind (a few dozen), not once per event
    SELECT k.kind, model_kind(k.kind) AS model_kind, emission_of(k.kind) AS emission, is_excluded(k.kind) AS excluded
    FROM (SELECT DISTINCT kind FROM dedup) k
), modeled AS (
    SELECT d.*, k.model_kind, k.emission, k.excluded, try_cast(d.source_id AS BIGINT) AS id_num
    FROM dedup d
    JOIN kinds k ON k.kind IS NOT DISTINCT FROM d.kind
), folded AS (
    -- the child standing for a folded bus event: the first (by id) of its audit's children of that kind
    SELECT audit_id, model_kind, coalesce(arg_min(source_id, id_num), min(source_id)) AS first_id
    FROM modeled WHERE emission = 'audit' AND audit_id IS NOT NULL
    GROUP BY audit_id, model_kind
), units AS (
    SELECT m.*, coalesce(f.first_id, m.source_id) AS expected_id
    FROM modeled m
    LEFT JOIN folded f ON m.emission = 'audit' AND f.audit_id = m.audit_id AND f.model_kind = m.model_kind
), ranked AS (
    -- positions are ranked over the bus events an audit is expected (or may be) to make, in child id order: only
    -- those children take part (a running count of them; the other rows of the audit count for none)
    SELECT *, source_id = expected_id AND emission IN ('child', 'audit', 'unknown') AND audit_id IS NOT NULL AS ranks
    FROM units
)
SELECT source_id, zendesk_key, ticket_id, kind, model_kind, emission, expected_id, event_time, audit_id, source_ref,
       CASE WHEN ranks THEN count(*) FILTER (WHERE ranks AND emission IN ('child', 'audit')) OVER by_id END AS pos_low,
       CASE WHEN ranks THEN count(*) FILTER (WHERE ranks) OVER by_id END AS position,
       event_time >= $window_start AND event_time < $window_end AS in_window,
       excluded
FROM ranked
WINDOW by_id AS (PARTITION BY audit_id ORDER BY id_num, source_id ROWS UNBOUNDED PRECEDING);
