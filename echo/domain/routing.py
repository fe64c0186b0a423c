"""Which of Core's router workers handles a message (seed 001), as pure functions.

Messages about one trade (a master's intent, close and modify; a slave's results; the Agent's acks of that
trade's commands) go to one worker, chosen by a stable hash of the trade_id, so their order is kept.
Everything else (handshakes, quotes, snapshots, accounts going offline) is control traffic and is handled
as it arrives, outside the pool."""

from __future__ import annotations

import zlib

from echo.domain import messages as m


def worker_for(trade_id: str, pool_size: int) -> int:
    """The worker of a trade: the same for every spelling case of the id and every process (no salted
    ``hash``). ``pool_size`` is a power of 2."""
    return zlib.crc32(trade_id.lower().encode()) & (pool_size - 1)


def trade_of(msg: m.AgentToCore) -> str | None:
    """The trade a message belongs to, when it says so itself (a CommandAck names only its command)."""
    if isinstance(msg, m.FromAccount):
        inner = msg.message
        if isinstance(
            inner,
            m.TradeIntent | m.TradeClose | m.TradeModify | m.ExecutionResult | m.CloseResult | m.ModifyResult,
        ):
            return inner.trade_id
    return None


def is_master_event(msg: m.AgentToCore) -> bool:
    """An event a master sends again when it is told RETRY: the only traffic the router may turn away when
    a worker's queue is full. Results and acks from slaves are never turned away (nothing would resend
    them as promptly), they only wait."""
    return isinstance(msg, m.FromAccount) and isinstance(
        msg.message, m.TradeIntent | m.TradeClose | m.TradeModify
    )
