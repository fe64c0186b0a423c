"""Recovery at start: the trade ids still inside the dedupe window, the accounts (evaluated again from
their last handshake), and every trade a restart must not forget, rebuilt from the store with its slave
positions, tickets, handled master events, queued operations and pending commands."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog

from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.ids import trade_comment, uuid7_time_ms
from echo.domain.types import Side
from echo.ports.store import JournalRow, Store
from echo.services.core.accounts import account_of, evaluation
from echo.services.core.context import Context
from echo.services.core.state import Op, Pending, SlavePosition, Trade, command_of

log = structlog.get_logger("echo.core")

MASTER_EVENTS = frozenset({"master_close", "master_partial_close", "master_modify"})


async def load(ctx: Context, store: Store) -> int:
    """Everything Core needs in memory before it handles a message; the number of trades recovered."""
    st = ctx.state
    horizon = ctx.now() - ctx.config.dedupe_window_ms
    for row in await store.trades(limit=1_000_000):
        if uuid7_time_ms(row.trade_id) >= horizon:
            st.seen_trade_ids.add(row.trade_id)
    st.pruned_at_ms = ctx.now()
    for a in await store.accounts():
        hs = msgspec.json.decode(a.handshake, type=m.Handshake)
        ev = evaluation(ctx, hs, a.agent_id)
        st.accounts[a.account_id] = account_of(
            hs, a.agent_id, ev, online=False, reported_at_ms=a.updated_at_ms
        )
    return await recover(ctx, store)


async def recover(ctx: Context, store: Store) -> int:
    """Rebuild, from the store, what a restart must not forget: every trade that is open at the master
    or still has unanswered commands, its slave positions and tickets, the master events already
    handled (for dedupe), and each pending command with its delivery state and retry time. Closed
    trades whose slave tickets are still open get a close queued."""
    pending = await store.journal("PENDING")
    trade_ids = {t.trade_id for t in await store.trades(status="open", limit=1_000_000)}
    trade_ids |= {j.trade_id for j in pending}
    # closed at the master, a slave's ticket still open (its close waited, e.g. for the slave's spec)
    trade_ids |= set(await store.trades_with_open_tickets())
    by_trade: dict[str, list[JournalRow]] = {}
    for j in pending:
        by_trade.setdefault(j.trade_id, []).append(j)
    now = ctx.now()
    for trade_id in sorted(trade_ids):
        row = await store.get_trade(trade_id)
        if row is None:
            log.error("core_recover_missing_trade", trade_id=trade_id)
            continue
        intent = m.TradeIntent(
            row.trade_id,
            row.trace_id,
            row.master_symbol,
            Side(row.side),
            row.lot_size,
            row.price,
            row.magic_number,
            row.master_ticket,
            row.stop_loss,
            row.take_profit,
            opened_at_ms=row.opened_at_ms,
        )
        trade = Trade(
            row, intent, row.symbol, comment=trade_comment(row.trade_id), closed=row.status == "closed"
        )
        for d in await store.decisions(trade_id):
            if d.decision == "copy":
                detail = msgspec.json.decode(d.detail)
                after_fill = detail.get("after_fill")
                trade.positions[d.account_id] = SlavePosition(
                    d.account_id,
                    str(detail.get("broker_symbol", "")),
                    None,
                    after_fill=(after_fill[0], after_fill[1]) if isinstance(after_fill, list) else None,
                )
        for t in await store.tickets(trade_id):
            pos = trade.positions.get(t.account_id)
            if pos is not None:
                pos.opened = True
                pos.after_fill = None  # set in the commit that recorded the fill
                if t.status == "open":
                    pos.tickets[t.ticket] = t.lots
        master_ops: list[Op] = []
        applied: dict[str, set[str]] = {}
        for e in await store.events(trade_id, limit=1_000_000):
            if e.kind in MASTER_EVENTS:
                data = msgspec.json.decode(e.data)
                event_id = data.get("event_id")
                if isinstance(event_id, str):
                    trade.events_seen.add(event_id)
                    op = op_from_event(e.kind, data, event_id)
                    if op is not None:
                        master_ops.append(op)
            elif e.kind == "op_applied" and e.account_id is not None:
                event_id = msgspec.json.decode(e.data).get("event_id")
                if isinstance(event_id, str):
                    applied.setdefault(e.account_id, set()).add(event_id)
        # A master close/modify that was acknowledged but not yet applied to a slave (it waited behind
        # a command in flight) is queued again, in the master's order.
        for pos in trade.positions.values():
            done = applied.get(pos.account_id, set())
            pos.queue.extend(op for op in master_ops if op.event_id not in done)
        commands = {c.command_id: c for c in await store.commands(trade_id)}
        for j in by_trade.get(trade_id, []):
            c = commands.get(j.command_id)
            pos = trade.positions.get(j.account_id)
            if c is None or pos is None:
                log.error("core_recover_orphan_command", command_id=j.command_id, trade_id=trade_id)
                continue
            cmd = command_of(c)
            state = delivery.Command(
                delivery.Stage[j.stage],
                delivery.Outcome.PENDING,
                j.attempt,
                j.next_retry_at_ms,
                j.last_error,
            )
            ctx.state.pending[j.command_id] = Pending(cmd, c.kind, j.account_id, trade_id, state)
            pos.in_flight.add(j.command_id)
            ctx.schedule(j.next_retry_at_ms or now, j.command_id)
        if trade.closed:
            for pos in trade.positions.values():
                full_close_queued = any(op.kind == "close" and op.fraction >= 1.0 for op in pos.queue)
                if (pos.tickets or pos.in_flight) and not full_close_queued:
                    # an open still in flight is closed once it fills
                    pos.queue.append(Op("close"))
        ctx.state.trades[trade_id] = trade
    return len(trade_ids)


def op_from_event(kind: str, data: dict[str, Any], event_id: str) -> Op | None:
    """The slave operation a recorded master event asks for (see ``master.on_close`` / ``on_modify``)."""
    if kind == "master_modify":
        if not data.get("mirrored", False):
            return None
        sl, tp = data.get("stop_loss"), data.get("take_profit")
        return Op(
            "modify",
            stop_loss=float(sl) if isinstance(sl, int | float) else None,
            take_profit=float(tp) if isinstance(tp, int | float) else None,
            event_id=event_id,
        )
    fraction = data.get("fraction", 1.0) if kind == "master_partial_close" else 1.0
    return Op("close", fraction=float(fraction), event_id=event_id)
