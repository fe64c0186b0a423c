-- Echo store, version 0001: the initial schema.
--
-- Portable DDL: the same file runs on SQLite and on PostgreSQL (where search_path = echo), so it uses
-- only TEXT, BIGINT and DOUBLE PRECISION, IF NOT EXISTS, unqualified names and no generated keys.
-- Every key is born outside the database (UUIDv7 strings, MT4 tickets). Times are Unix milliseconds.
-- The columns of each table are the fields of the matching row dataclass in echo/ports/store.py, in order.
-- The migration runner creates schema_migrations(version, applied_at_ms) itself.

-- One row per master trade: born when the master's open arrives, closed when its close arrives.
CREATE TABLE IF NOT EXISTS trades (
    trade_id        TEXT NOT NULL PRIMARY KEY,  -- UUIDv7 born at the master EA
    master_account  TEXT NOT NULL,
    master_ticket   BIGINT NOT NULL,
    symbol          TEXT NOT NULL,              -- canonical symbol
    master_symbol   TEXT NOT NULL,              -- the master broker's symbol
    side            TEXT NOT NULL,
    lot_size        DOUBLE PRECISION NOT NULL,
    price           DOUBLE PRECISION NOT NULL,
    magic_number    BIGINT NOT NULL,
    trace_id        TEXT NOT NULL,
    opened_at_ms    BIGINT NOT NULL,
    stop_loss       DOUBLE PRECISION,
    take_profit     DOUBLE PRECISION,
    status          TEXT NOT NULL,              -- open | closed
    closed_at_ms    BIGINT
);
-- trades(): newest first.
CREATE INDEX IF NOT EXISTS trades_opened_idx ON trades (opened_at_ms, trade_id);

-- One row per ticket a slave holds for a trade; a partial close leaves a remainder row whose
-- parent_ticket names the ticket it came from.
CREATE TABLE IF NOT EXISTS slave_tickets (
    account_id      TEXT NOT NULL,
    ticket          BIGINT NOT NULL,
    trade_id        TEXT NOT NULL,
    symbol          TEXT NOT NULL,              -- the slave broker's symbol
    lots            DOUBLE PRECISION NOT NULL,
    opened_at_ms    BIGINT NOT NULL,
    status          TEXT NOT NULL,              -- open | closed
    closed_at_ms    BIGINT,
    parent_ticket   BIGINT,
    PRIMARY KEY (account_id, ticket)
);
CREATE INDEX IF NOT EXISTS slave_tickets_trade_idx ON slave_tickets (trade_id);

-- One row per command sent to one slave account (retries reuse the command_id), with its result.
CREATE TABLE IF NOT EXISTS commands (
    command_id      TEXT NOT NULL PRIMARY KEY,  -- UUIDv7 born at Core
    trade_id        TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,              -- execute | close | modify
    trace_id        TEXT NOT NULL,
    payload         TEXT NOT NULL,              -- the command as sent (JSON)
    created_at_ms   BIGINT NOT NULL,
    status          TEXT NOT NULL,              -- sent | ok | failed
    error_code      TEXT,
    result          TEXT,                       -- the result as received (JSON)
    completed_at_ms BIGINT
);
-- commands(trade_id): by created_at_ms, then command_id.
CREATE INDEX IF NOT EXISTS commands_trade_idx ON commands (trade_id, created_at_ms, command_id);

-- The copy receipt: why each slave got (or did not get) a copy of a trade.
CREATE TABLE IF NOT EXISTS copy_decisions (
    decision_id     TEXT NOT NULL PRIMARY KEY,
    trade_id        TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    decision        TEXT NOT NULL,              -- copy | omit
    reason          TEXT NOT NULL,              -- copied, or the omission reason
    lot_size        DOUBLE PRECISION,
    detail          TEXT NOT NULL,              -- JSON: how the size and symbol were chosen
    at_ms           BIGINT NOT NULL
);
-- decisions(trade_id): by at_ms, then decision_id.
CREATE INDEX IF NOT EXISTS copy_decisions_trade_idx ON copy_decisions (trade_id, at_ms, decision_id);

-- The append-only event log: rows are inserted, never updated or deleted.
CREATE TABLE IF NOT EXISTS events (
    event_id        TEXT NOT NULL PRIMARY KEY,  -- UUIDv7: sorts by time
    at_ms           BIGINT NOT NULL,
    kind            TEXT NOT NULL,
    trade_id        TEXT,
    account_id      TEXT,
    command_id      TEXT,
    trace_id        TEXT,
    data            TEXT NOT NULL               -- JSON
);
-- events(trade_id): in event_id order.
CREATE INDEX IF NOT EXISTS events_trade_idx ON events (trade_id, event_id);
