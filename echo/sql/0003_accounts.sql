-- Accounts: the last handshake of every terminal (role, agent, symbol specs), upserted at each handshake,
-- so that after a restart Core knows every slave it copies to before the terminals reconnect.
CREATE TABLE IF NOT EXISTS accounts (
    account_id    TEXT NOT NULL PRIMARY KEY,
    role          TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    handshake     TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
