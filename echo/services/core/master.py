"""Master events: a trade intent (dedupe by trade_id, the copy decision for each follower, the receipt of
every copy and omission), a close or partial close, a modification, and a master event the router had no
room for. Each is acknowledged to the master in the same transaction."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from echo.domain import messages as m
from echo.domain.copying import Copy, SlaveView, canonical_symbol, plan_open
from echo.domain.errors import ErrorCode
from echo.domain.ids import trade_comment, uuid7_time_ms
from echo.domain.types import Role
from echo.pipe.jsonenc import to_json
from echo.ports.store import DecisionRow, TradeRow, TradeUpdate
from echo.services import instruments
from echo.services.core import positions
from echo.services.core.context import Context
from echo.services.core.state import Account, Op, SlavePosition, Trade
from echo.services.core.tx import Tx

log = structlog.get_logger("echo.core")

PRUNE_EVERY_MS = 60_000

_TRADE_COLUMNS = frozenset({"canonical", "master_price", "master_stop_loss", "master_take_profit"})
"""What a copy's sizing and stops detail repeats from the trade row: not kept in its receipt."""


def copy_detail(plan: Copy) -> dict[str, Any]:
    """The receipt's detail of a copy: how its size, symbol and stops were chosen. The command (and its id)
    is the trade's execute row for the account; the stops went with the order as ``stops`` unless
    ``after_fill`` holds them for a modify once it fills."""
    detail: dict[str, Any] = {k: v for k, v in plan.detail.items() if k not in _TRADE_COLUMNS}
    stops = detail.get("stops")
    if isinstance(stops, dict):
        detail["stops"] = {k: v for k, v in stops.items() if k not in _TRADE_COLUMNS}
    detail["broker_symbol"] = plan.broker_symbol
    if plan.after_fill:
        detail["after_fill"] = list(plan.after_fill)
    return detail


def slave_views(ctx: Context, master: str) -> list[SlaveView]:
    """What the copy rules see of each follower of ``master``."""
    accounts = ctx.state.accounts
    slaves = [a.account_id for a in accounts.values() if a.role is Role.SLAVE]
    views = []
    for a in ctx.config.followers(master, slaves):
        acc = accounts[a]
        views.append(
            SlaveView(
                a,
                acc.online,
                acc.symbols,
                ctx.policies.for_account(a),
                acc.quotes,
                acc.tick_values,
                acc.snapshot.currency if acc.snapshot else "",
                acc.tick_values_at_ms,
                acc.registration.value,
                acc.rejected_symbols,
            )
        )
    return views


def too_old(ctx: Context, trade_id: str, now_ms: int) -> bool:
    return uuid7_time_ms(trade_id) < now_ms - ctx.config.dedupe_window_ms


def prune(ctx: Context, now_ms: int) -> None:
    """Forget, about once a minute, trade ids and given-up commands older than the dedupe window (by
    their UUIDv7 time): memory stays bounded however long Core runs. Open trades stay in ``trades``;
    a closed trade keeps only its id here (``positions.maybe_forget`` drops the rest)."""
    st = ctx.state
    if now_ms - st.pruned_at_ms < PRUNE_EVERY_MS:
        return
    st.pruned_at_ms = now_ms
    horizon = now_ms - ctx.config.dedupe_window_ms
    st.seen_trade_ids = {t for t in st.seen_trade_ids if uuid7_time_ms(t) >= horizon}
    for command_id in [c for c in st.given_up if uuid7_time_ms(c) < horizon]:
        del st.given_up[command_id]


def on_intent(ctx: Context, acc: Account, intent: m.TradeIntent, received_ms: int, tx: Tx) -> None:
    """A new master trade: recorded once, then copied to each eligible follower or omitted with why."""
    st = ctx.state
    blog = tx.log.bind(trade_id=intent.trade_id, trace_id=intent.trace_id, master=acc.account_id)
    now = ctx.now()
    if acc.role is not Role.MASTER:
        blog.warning("core_intent_from_slave_ignored")
        return
    if intent.trade_id in st.seen_trade_ids or intent.trade_id in st.trades:
        blog.info("core_intent_duplicate", attempt=intent.attempt)
        ctx.count("duplicate_intents")
        tx.ack(acc.account_id, intent.trade_id, intent.trace_id, m.AckStatus.DUPLICATE)
        return
    prune(ctx, now)
    if too_old(ctx, intent.trade_id, now):
        ctx.record(
            tx,
            "intent_refused",
            level="warning",
            log_as="core_intent_too_old",
            log_extra={"window_ms": ctx.config.dedupe_window_ms},
            trade_id=intent.trade_id,
            account_id=acc.account_id,
            reason="too old",
        )
        tx.ack(
            acc.account_id,
            intent.trade_id,
            intent.trace_id,
            m.AckStatus.REJECTED,
            None,
            "trade_id is older than core.dedupe_window_ms: it cannot be told from a duplicate",
        )
        return
    canonical = canonical_symbol(intent.symbol, acc.handshake.symbol_mappings)
    row = TradeRow(
        intent.trade_id,
        acc.account_id,
        intent.ticket,
        canonical,
        intent.symbol,
        intent.side.value,
        intent.lot_size,
        intent.price,
        intent.magic_number,
        intent.trace_id,
        intent.opened_at_ms or received_ms,
        intent.stop_loss,
        intent.take_profit,
    )
    trade = Trade(row, intent, canonical, comment=trade_comment(intent.trade_id))
    st.trades[intent.trade_id] = trade
    st.seen_trade_ids.add(intent.trade_id)
    tx.batch.trades.append(row)
    ctx.record(
        tx,
        "trade_opened",
        level=None,  # the fan-out line below says it with every decision
        trade_id=intent.trade_id,
        account_id=acc.account_id,
        trace_id=intent.trace_id,
        symbol=intent.symbol,
        canonical=canonical,
        side=intent.side.value,
        lots=intent.lot_size,
        price=intent.price,
        ticket=intent.ticket,
        attempt=intent.attempt,
    )
    ctx.count("trades")
    copies: list[dict[str, object]] = []
    omitted: list[dict[str, object]] = []
    fanout_line = blog.is_enabled_for(logging.INFO)
    for plan in plan_open(intent, canonical, slave_views(ctx, acc.account_id), now, received_ms):
        if isinstance(plan, Copy):
            cmd = decide_copy(ctx, trade, plan, now, tx)
            instruments.copy_decided(plan.account_id, plan.broker_symbol, plan.detail)
            if fanout_line:  # built only for a line that is written
                copies.append(
                    {
                        "slave": plan.account_id,
                        "symbol": plan.broker_symbol,
                        "lots": plan.lot_size,
                        "sizing": plan.detail.get("sizing"),
                        "risk": plan.detail.get("effective_risk"),
                        "stop_loss": plan.stop_loss,
                        "stops_after_fill": plan.after_fill is not None,
                        "command_id": cmd.command_id,
                    }
                )
        else:
            tx.batch.decisions.append(
                DecisionRow(
                    ctx.ids.uuid7(),
                    intent.trade_id,
                    plan.account_id,
                    "omit",
                    plan.reason,
                    None,
                    to_json(plan.detail),
                    now,
                )
            )
            ctx.count("omitted")
            instruments.omitted(plan.account_id, plan.reason)
            omitted.append({"slave": plan.account_id, "reason": plan.reason, **plan.detail})
    # One line per fan-out carries every decision (the store keeps one receipt row per slave).
    blog.info(
        "core_trade_fanout",
        symbol=intent.symbol,
        canonical=canonical,
        side=intent.side.value,
        lots=intent.lot_size,
        price=intent.price,
        copies=copies,
        omitted=omitted,
    )
    if omitted:
        blog.warning("core_copy_omitted", omitted=omitted)
    tx.ack(acc.account_id, intent.trade_id, intent.trace_id, m.AckStatus.OK)


def decide_copy(ctx: Context, trade: Trade, plan: Copy, now: int, tx: Tx) -> m.ExecuteOrder:
    """Open a follower's position: its receipt, and the execute command issued on it."""
    intent = trade.intent
    cmd = m.ExecuteOrder(
        ctx.ids.uuid7(),
        intent.trade_id,
        intent.trace_id,
        plan.broker_symbol,
        intent.side,
        plan.lot_size,
        intent.magic_number,
        trade.comment,
        plan.stop_loss,
        plan.take_profit,
        master_price=intent.price,
        max_slippage_points=plan.max_slippage_points,
        max_spread_points=plan.max_spread_points,
    )
    pos = SlavePosition(plan.account_id, plan.broker_symbol, plan.spec, after_fill=plan.after_fill)
    trade.positions[plan.account_id] = pos
    tx.batch.decisions.append(
        DecisionRow(
            ctx.ids.uuid7(),
            intent.trade_id,
            plan.account_id,
            "copy",
            "copied",
            plan.lot_size,
            to_json(copy_detail(plan)),
            now,
        )
    )
    positions.issue(ctx, trade, pos, cmd, "execute", tx)
    return cmd


def master_trade(
    ctx: Context, acc: Account, trade_id: str, event_id: str, trace_id: str, kind: str, tx: Tx
) -> Trade | None:
    """The trade a master close or modify is about, once per event_id; None (and the master told why)
    when it is too old, unknown, another master's or a repeated event."""
    st = ctx.state
    trade = st.trades.get(trade_id)
    if trade is None and too_old(ctx, trade_id, ctx.now()):
        log.warning(f"core_{kind}_too_old", trade_id=trade_id, event_id=event_id, master=acc.account_id)
        tx.ack(
            acc.account_id,
            trade_id,
            trace_id,
            m.AckStatus.REJECTED,
            event_id,
            "trade_id is older than core.dedupe_window_ms and not open here",
        )
        return None
    if trade is None or trade.row.master_account != acc.account_id:
        known = trade_id in st.seen_trade_ids
        log.warning(
            f"core_{kind}_for_unknown_trade",
            trade_id=trade_id,
            event_id=event_id,
            master=acc.account_id,
            already_closed=known,
        )
        # An event for a trade whose open has not arrived yet (a lost or reordered line): the master must
        # keep it and send it again, or the open, when it comes, would be copied and never closed.
        status = m.AckStatus.DUPLICATE if known else m.AckStatus.RETRY
        tx.ack(
            acc.account_id,
            trade_id,
            trace_id,
            status,
            event_id,
            "trade already closed" if known else "unknown trade_id: its open has not arrived yet",
        )
        return None
    if event_id in trade.events_seen:
        log.info(f"core_{kind}_duplicate", trade_id=trade_id, event_id=event_id)
        tx.ack(acc.account_id, trade_id, trace_id, m.AckStatus.DUPLICATE, event_id)
        return None
    trade.events_seen.add(event_id)
    return trade


def on_close(ctx: Context, acc: Account, close: m.TradeClose, tx: Tx) -> None:
    """A master close or partial close: queued on every slave position (closes are never filtered)."""
    trade = master_trade(ctx, acc, close.trade_id, close.event_id, close.trace_id, "close", tx)
    if trade is None:
        return
    now = ctx.now()
    fraction = 1.0 if not close.is_partial else close.fraction
    ctx.record(
        tx,
        "master_partial_close" if close.is_partial else "master_close",
        log_as="core_master_close",
        trade_id=close.trade_id,
        account_id=acc.account_id,
        trace_id=close.trace_id,
        event_id=close.event_id,
        lots=close.lot_size,
        remaining=close.remaining_lots,
        new_ticket=close.new_ticket,
        price=close.price,
        fraction=fraction,
    )
    if not close.is_partial:
        trade.closed = True
        tx.batch.trade_updates.append(TradeUpdate(close.trade_id, "closed", now))
    closes: list[dict[str, object]] = []
    for pos in trade.positions.values():
        pos.queue.append(Op("close", fraction=fraction, event_id=close.event_id))
        positions.pump(ctx, trade, pos, tx, closes)
    if closes:
        # One line per close fan-out carries every slave's close (the store keeps each command's row).
        tx.log.info("core_close_fanout", trade_id=close.trade_id, trace_id=close.trace_id, closes=closes)
    tx.ack(acc.account_id, close.trade_id, close.trace_id, m.AckStatus.OK, close.event_id)
    positions.maybe_forget(ctx, trade)


def on_modify(ctx: Context, acc: Account, mod: m.TradeModify, tx: Tx) -> None:
    """A master SL/TP change: mirrored on every slave position when ``core.copy_sl_tp``."""
    trade = master_trade(ctx, acc, mod.trade_id, mod.event_id, mod.trace_id, "modify", tx)
    if trade is None:
        return
    ctx.record(
        tx,
        "master_modify",
        trade_id=mod.trade_id,
        account_id=acc.account_id,
        trace_id=mod.trace_id,
        event_id=mod.event_id,
        stop_loss=mod.stop_loss,
        take_profit=mod.take_profit,
        mirrored=ctx.config.copy_sl_tp,
    )
    if ctx.config.copy_sl_tp:
        for pos in trade.positions.values():
            pos.queue.append(
                Op("modify", stop_loss=mod.stop_loss, take_profit=mod.take_profit, event_id=mod.event_id)
            )
            positions.pump(ctx, trade, pos, tx)
    tx.ack(acc.account_id, mod.trade_id, mod.trace_id, m.AckStatus.OK, mod.event_id)


def reject_busy(ctx: Context, agent_id: str, msg: m.AgentToCore, worker_id: int, depth: int) -> Tx:
    """A master event the router had no room for: recorded, and the master told to send it again."""
    tx = Tx()
    assert isinstance(msg, m.FromAccount)
    inner = msg.message
    assert isinstance(inner, m.TradeIntent | m.TradeClose | m.TradeModify)
    event_id = getattr(inner, "event_id", None)
    ctx.count("router_busy")
    ctx.record(
        tx,
        "router_busy",
        level=None,  # counted; the router logs its rejections
        trade_id=inner.trade_id,
        account_id=msg.account_id,
        trace_id=inner.trace_id,
        agent_id=agent_id,
        message=type(inner).__name__,
        event_id=event_id,
        worker_id=worker_id,
        queue_depth=depth,
    )
    tx.ack(
        msg.account_id,
        inner.trade_id,
        inner.trace_id,
        m.AckStatus.RETRY,
        event_id,
        f"core is busy (router worker {worker_id} holds {depth} events); send it again",
        ErrorCode.ERR_BROKER_BUSY,
    )
    return tx
