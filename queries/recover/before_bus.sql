-- before_bus: the events the run judged lost before the bus (in Zendesk's API, never on the bus), from `verdicts`,
-- with what the Zendesk side holds for them; no EventBridge event exists to re-send.
SELECT source_id, zendesk_key, ticket_id, kind, event_time, audit_id, source_ref
FROM verdicts
WHERE verdict IN (SELECT verdict FROM verdict_vocab WHERE loss_hop = 'zendesk_to_bus')
ORDER BY event_time, source_id;
