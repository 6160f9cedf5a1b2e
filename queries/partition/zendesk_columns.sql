-- zendesk_columns: the columns of the zendesk ledger that a ticket partition reads (queries/source_events.sql), all
-- that the split of the zendesk ledger writes (the run-wide queries read the ledger whole). The other columns are
-- the AWS stores' and empty here; leaving them out spares the split and each partition's load a third of their
-- work. A column source_events starts to read must be added here; a partitioned run fails naming it until it is
-- (tests/test_partition.py judges both ways).
SELECT source_id, zendesk_key, ticket_id, event_type, event_time, audit_id, source_ref FROM zendesk
