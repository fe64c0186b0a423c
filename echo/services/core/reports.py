"""What slaves and their Agents report: a command's result (tickets, partial closes, failures, a result
after giving up), the Agent's delivery acks, stops set after the fill, quotes, and the state snapshot with
the positions the broker closed on its own (SL, TP, stop-out: recorded, alerted, never reopened)."""

from __future__ import annotations

from typing import Any

import structlog

from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.copying import SlaveQuote, stops_too_close
from echo.domain.errors import OMITTED_AT_SLAVE, ErrorCode
from echo.domain.types import Role, Side
from echo.ports.store import CommandStatus, CommandUpdate, TicketRow, TicketUpdate
from echo.services import instruments
from echo.services.core import positions
from echo.services.core.context import Context
from echo.services.core.state import Account, Op, SlavePosition, Trade, compact
from echo.services.core.tx import Tx

log = structlog.get_logger("echo.core")


def on_result(ctx: Context, acc: Account, res: m.Result, tx: Tx) -> None:
    """A slave's result for a command: the command row, the tickets, and the position's next operation."""
    st = ctx.state
    pend = st.pending.get(res.command_id)
    late = pend is None and res.command_id in st.given_up
    if late:
        pend = st.given_up.pop(res.command_id)
    blog = tx.log.bind(
        trade_id=res.trade_id, trace_id=res.trace_id, command_id=res.command_id, slave=acc.account_id
    )
    if pend is None:
        # A re-sent command is answered again with the same result: expected, nothing to do.
        held = st.trades.get(res.trade_id)
        dup = res.command_id in held.done_commands if held is not None else res.trade_id in st.seen_trade_ids
        ctx.record(
            tx,
            "result_duplicate" if dup else "result_unknown_command",
            level="info" if dup else "warning",
            log_extra={"result": type(res).__name__},
            trade_id=res.trade_id,
            account_id=acc.account_id,
            command_id=res.command_id,
            trace_id=res.trace_id,
        )
        return
    if pend.account_id != acc.account_id:
        blog.error("core_result_from_wrong_account", expected=pend.account_id)
        if late:
            st.given_up[res.command_id] = pend
        return
    if late:
        # The command was given up, yet it executed: what the slave did is the truth and is recorded.
        blog.warning("core_result_after_give_up", result=type(res).__name__, success=res.success)
    else:
        del st.pending[res.command_id]
    positions.drive(ctx, pend, delivery.Confirmed(res.success, res.error_code.value), tx)
    now = ctx.now()
    trade = st.trades.get(pend.trade_id)
    if trade is not None:
        trade.done_commands.add(res.command_id)
    pos = trade.positions.get(acc.account_id) if trade else None
    if pos is not None:
        pos.in_flight.discard(res.command_id)
    status: CommandStatus = "ok" if res.success else "failed"
    tx.batch.command_updates.append(
        CommandUpdate(res.command_id, status, res.error_code.value, compact(res), now)
    )
    if not res.success and res.error_code in OMITTED_AT_SLAVE:
        # The slave's live-price re-check kept the order from the broker: an omission, not a failure.
        ctx.count("omitted_at_slave")
        instruments.omitted(acc.account_id, res.error_code.value)
        blog.warning("core_copy_omitted_at_slave", reason=res.error_code.value, message=res.error_message)
    elif not res.success and pos is not None and res.command_id == pos.after_fill_command:
        pass  # stops refused after the fill: after_fill_result decides (usually: wait for the price)
    elif not res.success:
        ctx.count(f"{pend.kind}_failed")
        instruments.rejected(acc.account_id, res.error_code.value, pend.kind == "execute")
        blog.error(
            f"core_{pend.kind}_failed",
            error_code=res.error_code.value,
            mt4_error=res.mt4_error,
            message=res.error_message,
        )
    if isinstance(res, m.ExecutionResult) and pos is not None:
        if res.success and res.ticket is not None:
            lots = res.executed_lots or pend.command.lot_size  # type: ignore[union-attr]
            pos.tickets[res.ticket] = lots
            pos.opened = True
            pos.failed = False
            if res.executed_price:
                pos.entry_price = res.executed_price
            if pos.after_fill is not None:
                sl, tp = pos.after_fill
                pos.after_fill = None
                # before anything else queued: the position must not stay without its stops
                pos.queue.appendleft(Op("modify", stop_loss=sl, take_profit=tp, exact=True))
                blog.info("core_stops_after_fill", ticket=res.ticket, stop_loss=sl, take_profit=tp)
            if late and trade is not None and trade.closed:
                pos.queue.append(Op("close"))  # the master closed meanwhile: so does this slave
            tx.batch.tickets.append(
                TicketRow(acc.account_id, res.ticket, res.trade_id, pos.broker_symbol, lots, now)
            )
            ctx.count("copied")
            instruments.filled(acc, trade, pos.broker_symbol, res.executed_price, now)
            blog.info("core_copied", ticket=res.ticket, lots=lots, price=res.executed_price)
        else:
            pos.failed = True
    elif isinstance(res, m.CloseResult) and pos is not None and res.success:
        lots_before = pos.tickets.pop(res.ticket, 0.0)
        if res.new_ticket == res.ticket and res.remaining_lots > 0:
            # MT5: a partial close keeps the position's ticket; the same ticket, with what is left
            pos.tickets[res.ticket] = res.remaining_lots
            tx.batch.ticket_updates.append(
                TicketUpdate(acc.account_id, res.ticket, "open", res.remaining_lots, None)
            )
        else:
            tx.batch.ticket_updates.append(
                TicketUpdate(acc.account_id, res.ticket, "closed", res.closed_lots or lots_before, now)
            )
        if res.new_ticket is not None and res.new_ticket != res.ticket and res.remaining_lots > 0:
            pos.tickets[res.new_ticket] = res.remaining_lots
            tx.batch.tickets.append(
                TicketRow(
                    acc.account_id,
                    res.new_ticket,
                    res.trade_id,
                    pos.broker_symbol,
                    res.remaining_lots,
                    now,
                    parent_ticket=res.ticket,
                )
            )
        ctx.count("slave_closes")
        blog.info(
            "core_slave_closed",
            ticket=res.ticket,
            closed_lots=res.closed_lots,
            new_ticket=res.new_ticket,
            remaining=res.remaining_lots,
        )
    elif isinstance(res, m.ModifyResult) and pos is not None and res.command_id == pos.after_fill_command:
        after_fill_result(acc, trade, pos, res, blog)
    elif isinstance(res, m.ModifyResult) and res.success:
        blog.info(
            "core_slave_modified", ticket=res.ticket, stop_loss=res.stop_loss, take_profit=res.take_profit
        )
    if trade is not None and pos is not None:
        positions.pump(ctx, trade, pos, tx)
        positions.maybe_forget(ctx, trade)


def on_command_ack(ctx: Context, agent_id: str, ack: m.CommandAck, tx: Tx) -> None:
    """The Agent's hop: buffered for an offline terminal, delivered into the terminal, or not."""
    pend = ctx.state.pending.get(ack.command_id)
    if pend is None or pend.account_id != ack.account_id:
        return
    instruments.delivery_ack(ack.stage.value, ack.result.value)
    if ack.result is m.AckResult.PENDING:
        positions.drive(ctx, pend, delivery.AgentBuffered(), tx)
        return
    if ack.result is m.AckResult.OK:
        positions.drive(ctx, pend, delivery.PipeDelivered(), tx)
        return
    ctx.record(
        tx,
        "command_not_delivered",
        level="warning",
        log_extra={"agent_id": agent_id, "attempt": pend.state.attempt},
        trade_id=pend.trade_id,
        account_id=ack.account_id,
        command_id=ack.command_id,
        command_kind=pend.kind,
        stage=ack.stage.value,
        reason=ack.reason,
    )
    # The same command goes out again after the backoff, or when the terminal reconnects.
    positions.drive(ctx, pend, delivery.NotDelivered(f"{ack.stage.value}: {ack.reason}"), tx)


def after_fill_result(
    acc: Account, trade: Trade | None, pos: SlavePosition, res: m.ModifyResult, blog: Any
) -> None:
    """The modify that puts on the stops StopLevel kept off the order: done, or (the price is still too
    close) retried as soon as a quote allows it."""
    pos.after_fill_command = None
    if res.success:
        pos.after_fill = None
        blog.info("core_stops_set_after_fill", ticket=res.ticket, stop_loss=res.stop_loss)
    elif res.error_code is ErrorCode.ERR_INVALID_STOPS and trade is not None:
        acc.stops_waiting.add(trade.row.trade_id)
        blog.warning("core_stops_wait_for_price", ticket=res.ticket, intended=pos.after_fill)
    else:
        pos.after_fill = None


def on_quotes(ctx: Context, acc: Account, quotes: m.Quotes, received_ms: int, tx: Tx) -> None:
    for q in quotes.quotes:
        acc.quotes[q.symbol] = SlaveQuote(q.bid, q.ask, received_ms)
    if acc.stops_waiting:
        retry_stops(ctx, acc, tx)


def retry_stops(ctx: Context, acc: Account, tx: Tx) -> None:
    """Stops refused after the fill go out again once the account's quote leaves room for them."""
    for trade_id in list(acc.stops_waiting):
        trade = ctx.state.trades.get(trade_id)
        pos = trade.positions.get(acc.account_id) if trade else None
        if trade is None or pos is None or pos.after_fill is None or not pos.tickets:
            acc.stops_waiting.discard(trade_id)
            continue
        quote = acc.quotes.get(pos.broker_symbol)
        if pos.in_flight or pos.spec is None or quote is None:
            continue
        close_price = quote.bid if trade.intent.side is Side.BUY else quote.ask
        if stops_too_close(pos.spec, trade.intent.side, close_price, *pos.after_fill):
            continue
        acc.stops_waiting.discard(trade_id)
        sl, tp = pos.after_fill
        pos.queue.appendleft(Op("modify", stop_loss=sl, take_profit=tp, exact=True))
        positions.pump(ctx, trade, pos, tx)


def on_snapshot(ctx: Context, acc: Account, snap: m.StateSnapshot, received_ms: int, tx: Tx) -> None:
    acc.snapshot = snap
    for tv in snap.tick_values:
        if tv.tick_value > 0:
            acc.tick_values[tv.symbol] = tv.tick_value
    if snap.tick_values:
        acc.tick_values_at_ms = received_ms
    if acc.role is Role.SLAVE and (snap.recent_closes or acc.broker_closes_handled):
        on_broker_closes(ctx, acc, snap.recent_closes, tx)


def _ticket_owner(ctx: Context, account_id: str, ticket: int) -> tuple[Trade, SlavePosition] | None:
    for trade in ctx.state.trades.values():
        pos = trade.positions.get(account_id)
        if pos is not None and ticket in pos.tickets:
            return trade, pos
    return None


def on_broker_closes(ctx: Context, acc: Account, closes: list[m.ClosedPosition], tx: Tx) -> None:
    """Slave positions the broker closed on its own (SL, TP, stop-out): the ticket is closed here too,
    the event recorded and alerted, and the position is never reopened; the master's later close of
    the trade has nothing left to do on this account."""
    acc.broker_closes_handled &= {c.ticket for c in closes}
    for close in closes:
        if close.ticket in acc.broker_closes_handled:
            continue
        owner = _ticket_owner(ctx, acc.account_id, close.ticket)
        if owner is None:
            continue  # not (yet) known as ours: the fill may still be on its way; the snapshot repeats it
        trade, pos = owner
        if pos.in_flight:
            continue  # a command of ours may be what closed it: its result will say
        acc.broker_closes_handled.add(close.ticket)
        lots = pos.tickets.pop(close.ticket)
        pos.closed_by_broker = close.reason.value
        tx.batch.ticket_updates.append(
            TicketUpdate(acc.account_id, close.ticket, "closed", lots, close.closed_at_ms)
        )
        stop_out = close.reason is m.CloseReason.STOP_OUT
        ctx.record(
            tx,
            "slave_closed_by_broker",
            level="error" if stop_out else "warning",
            log_extra={"slave": acc.account_id, "alert": stop_out, "reopened": False},
            trade_id=trade.row.trade_id,
            account_id=acc.account_id,
            trace_id=trade.row.trace_id,
            ticket=close.ticket,
            reason=close.reason.value,
            lots=lots,
            close_price=close.close_price,
            closed_at_ms=close.closed_at_ms,
        )
        ctx.count(f"slave_{close.reason.value.lower()}")
        instruments.broker_closed(acc.account_id, close.reason.value)
        positions.pump(ctx, trade, pos, tx)
        positions.maybe_forget(ctx, trade)
