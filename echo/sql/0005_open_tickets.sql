-- Slave tickets still open, by trade: Core's recovery finds every trade with a slave position left to
-- close, including trades the master has already closed (their close may still be waiting on a slave).
CREATE INDEX IF NOT EXISTS slave_tickets_open_idx ON slave_tickets (trade_id) WHERE status = 'open';
