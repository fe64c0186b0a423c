-- Retention: Core purges closed trades (with their commands, journal, events and decisions) some days after
-- they closed, oldest first, in small batches; this index finds them without reading every trade.
CREATE INDEX IF NOT EXISTS trades_closed_idx ON trades (closed_at_ms, trade_id) WHERE status = 'closed';

-- Reads by trade need only the trade_id in these indexes (a trade has a few rows, sorted when read): the
-- ordering columns and the repeated row ids made each entry about twice as large.
DROP INDEX IF EXISTS commands_trade_idx;
CREATE INDEX IF NOT EXISTS commands_trade ON commands (trade_id);
DROP INDEX IF EXISTS copy_decisions_trade_idx;
CREATE INDEX IF NOT EXISTS copy_decisions_trade ON copy_decisions (trade_id);
DROP INDEX IF EXISTS events_trade_idx;
CREATE INDEX IF NOT EXISTS events_trade ON events (trade_id);
