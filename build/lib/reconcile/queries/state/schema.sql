-- The run-state file: one row per window run, its per-hop figures, the pending events it left open, and the
-- settlements later runs made of them. Created if missing; never dropped.
CREATE TABLE IF NOT EXISTS runs (
    window_key VARCHAR PRIMARY KEY, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, as_of TIMESTAMPTZ,
    status VARCHAR, exit_code INTEGER, generated_at TIMESTAMPTZ, out_dir VARCHAR, events BIGINT);
CREATE TABLE IF NOT EXISTS run_hops (
    window_key VARCHAR, hop VARCHAR, "in" BIGINT, "out" BIGINT, lost BIGINT, pending BIGINT,
    PRIMARY KEY (window_key, hop));
CREATE TABLE IF NOT EXISTS pending (
    window_key VARCHAR, source_id VARCHAR, zendesk_key VARCHAR, eb_id VARCHAR, ticket_id BIGINT, kind VARCHAR,
    event_time TIMESTAMPTZ, position BIGINT, PRIMARY KEY (window_key, source_id));
CREATE TABLE IF NOT EXISTS settlements (
    window_key VARCHAR, source_id VARCHAR, settled_in VARCHAR, verdict VARCHAR, eb_id VARCHAR,
    lateness_s DOUBLE, PRIMARY KEY (window_key, source_id));
