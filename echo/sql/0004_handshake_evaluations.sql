-- Handshake evaluations (RFC-005a): Core's verdict on each handshake, globally and per symbol, kept 30 days
-- (purged by Core) so that "why was this account or symbol refused, and since when" can be answered.
CREATE TABLE IF NOT EXISTS handshake_evaluations (
    evaluation_id    TEXT NOT NULL PRIMARY KEY,
    account_id       TEXT NOT NULL,
    pipe_role        TEXT NOT NULL,
    status           TEXT NOT NULL,
    protocol_version INTEGER NOT NULL,
    client_semver    TEXT NOT NULL,
    global_errors    TEXT NOT NULL,
    global_warnings  TEXT NOT NULL,
    evaluated_at_ms  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS handshake_evaluations_account ON handshake_evaluations (account_id, evaluated_at_ms);
CREATE INDEX IF NOT EXISTS handshake_evaluations_time ON handshake_evaluations (evaluated_at_ms);

CREATE TABLE IF NOT EXISTS symbol_registrations (
    evaluation_id    TEXT NOT NULL,
    canonical_symbol TEXT NOT NULL,
    broker_symbol    TEXT NOT NULL,
    status           TEXT NOT NULL,
    warnings         TEXT NOT NULL,
    errors           TEXT NOT NULL,
    spec_age_ms      BIGINT NOT NULL,
    evaluated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (evaluation_id, broker_symbol)
);
CREATE INDEX IF NOT EXISTS symbol_registrations_time ON symbol_registrations (evaluated_at_ms);
