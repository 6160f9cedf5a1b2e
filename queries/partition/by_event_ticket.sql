-- by_event_ticket: by_ticket.sql for the bus events of one EventBridge-id partition (`split_in`), except that a webhook
-- event whose Zendesk event id names an event of another ticket (webhook_tickets.sql) goes to that event's ticket's
-- partition: hop A links them on the id alone, as a single pass does. Ids no store names a ticket for go to part -1.
SELECT s.* EXCLUDE (t), CASE WHEN t IS NULL THEN -1 ELSE (hash(t) % $k::UBIGINT)::BIGINT END AS part
FROM (SELECT s.*, coalesce(w.ticket_id, s.ticket_id) AS t
      FROM split_in s LEFT JOIN webhook_tickets w ON s.family = 'webhook' AND w.zendesk_key = s.zendesk_key) s
