-- The delivery journal (lossless delivery, seed 000): where every command Core sent stands, written
-- before the command leaves and after every change, so the reconciler can re-send what is unanswered.

-- One row per command: its stage (CommandAck stages), outcome, how many sends so far and when the next
-- one is due. Upserted by command_id.
CREATE TABLE IF NOT EXISTS delivery_journal (
    command_id       TEXT NOT NULL PRIMARY KEY,
    trade_id         TEXT NOT NULL,
    account_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    stage            TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    attempt          BIGINT NOT NULL,
    next_retry_at_ms BIGINT,
    last_error       TEXT NOT NULL,
    updated_at_ms    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_journal_outcome ON delivery_journal (outcome, updated_at_ms, command_id);
CREATE INDEX IF NOT EXISTS delivery_journal_trade ON delivery_journal (trade_id);

-- Append-only: every re-send of a command, and the give-up after the last one.
CREATE TABLE IF NOT EXISTS delivery_retry_event (
    event_id   TEXT NOT NULL PRIMARY KEY,
    command_id TEXT NOT NULL,
    attempt    BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_retry_event_command ON delivery_retry_event (command_id, at_ms, event_id);
