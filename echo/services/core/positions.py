"""Slave positions: the per-(trade, slave) queue of operations, issuing the next command once nothing is in
flight (``pump``), driving a command's delivery machine (``drive``), and what happens when a command got
no result after every send (``gave_up``). A close or modify waits for the previous command's result,
because MT4 gives the remainder of a partial close a new ticket that only the result tells us."""

from __future__ import annotations

from dataclasses import replace

import structlog

from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.copying import modified_stops, plan_partial_close
from echo.domain.errors import ErrorCode
from echo.pipe.jsonenc import to_json
from echo.ports.store import CommandKind, CommandRow, CommandUpdate, JournalRow, RetryEventRow
from echo.services import instruments
from echo.services.core.context import Context
from echo.services.core.state import Pending, SlavePosition, Trade, compact
from echo.services.core.tx import Tx

log = structlog.get_logger("echo.core")


def issue(ctx: Context, trade: Trade, pos: SlavePosition, cmd: m.Command, kind: CommandKind, tx: Tx) -> None:
    """Record a new command and start its delivery (it leaves once the transaction is written)."""
    now = ctx.now()
    tx.batch.commands.append(
        CommandRow(
            cmd.command_id,
            cmd.trade_id,
            pos.account_id,
            kind,
            cmd.trace_id,
            compact(cmd, trade.comment),
            now,
        )
    )
    pend = Pending(cmd, kind, pos.account_id, cmd.trade_id)
    ctx.state.pending[cmd.command_id] = pend
    pos.in_flight.add(cmd.command_id)
    drive(ctx, pend, delivery.Journaled(), tx)
    ctx.count(f"{kind}_sent")


def drive(ctx: Context, pend: Pending, event: delivery.CommandInput, tx: Tx) -> list[delivery.Effect]:
    """Feed the command's delivery machine and carry out its effects into this transaction."""
    now = ctx.now()
    state, effects = delivery.command_transition(pend.state, event, now, ctx.delivery)
    pend.state = state
    cmd = pend.command
    for effect in effects:
        kind = type(effect)  # the effects are final classes: compared by identity, cheaper than isinstance
        if kind is delivery.Persist:
            tx.batch.journal.append(
                JournalRow(
                    cmd.command_id,
                    cmd.trade_id,
                    pend.account_id,
                    pend.kind,
                    state.stage._name_,
                    state.outcome._value_,
                    state.attempt,
                    state.next_retry_at_ms,
                    state.last_error,
                    now,
                )
            )
        elif kind is delivery.RetryAt:
            assert isinstance(effect, delivery.RetryAt)
            ctx.schedule(effect.at_ms, cmd.command_id)
        elif kind is delivery.Send:
            assert isinstance(effect, delivery.Send)
            out = cmd if effect.attempt == 1 else replace(cmd, attempt=effect.attempt)
            tx.sends.append(m.ToAccount(pend.account_id, out))
            if effect.attempt > 1:
                ctx.count("resends")
                instruments.delivery_ack("CORE_SENT", "RESENT")
                tx.batch.retry_events.append(
                    RetryEventRow(ctx.ids.uuid7(), cmd.command_id, effect.attempt, state.last_error, now)
                )
                tx.log.warning(
                    "core_command_resent",
                    command_id=cmd.command_id,
                    trade_id=cmd.trade_id,
                    trace_id=cmd.trace_id,
                    slave=pend.account_id,
                    kind=pend.kind,
                    attempt=effect.attempt,
                    reason=state.last_error,
                )
        elif kind is delivery.Done and state.gave_up:
            assert isinstance(effect, delivery.Done)
            gave_up(ctx, pend, effect.reason, tx)
        elif kind is delivery.Alert:
            assert isinstance(effect, delivery.Alert)
            tx.log.error(
                "core_delivery_alert",
                command_id=cmd.command_id,
                trade_id=cmd.trade_id,
                slave=pend.account_id,
                kind=pend.kind,
                reason=effect.reason,
            )
        elif kind is delivery.Invalid:
            assert isinstance(effect, delivery.Invalid)
            tx.log.warning(
                "core_delivery_invalid_input",
                command_id=cmd.command_id,
                state=effect.state,
                input=effect.input,
                reason=effect.reason,
            )
    return effects


def gave_up(ctx: Context, pend: Pending, reason: str, tx: Tx) -> None:
    """No result after every send: the command failed. An unconfirmed open is an omission with its
    reason; an unconfirmed close or modify leaves a slave position that needs a person (alerted), and
    is sent again when the terminal reconnects."""
    cmd = pend.command
    now = ctx.now()
    ctx.state.pending.pop(cmd.command_id, None)
    ctx.state.given_up[cmd.command_id] = pend
    tx.drops.append(m.DropCommand(pend.account_id, cmd.command_id, reason))
    tx.batch.command_updates.append(
        CommandUpdate(cmd.command_id, "failed", ErrorCode.ERR_TIMEOUT.value, to_json({"reason": reason}), now)
    )
    tx.batch.retry_events.append(
        RetryEventRow(ctx.ids.uuid7(), cmd.command_id, pend.state.attempt, f"gave up: {reason}", now)
    )
    opening = pend.kind == "execute"
    ctx.record(
        tx,
        "command_gave_up",
        level="error" if opening else "critical",
        log_as="core_copy_failed" if opening else "core_slave_position_needs_attention",
        log_extra=None if opening else {"ticket": getattr(cmd, "ticket", None)},
        trade_id=cmd.trade_id,
        account_id=pend.account_id,
        command_id=cmd.command_id,
        trace_id=cmd.trace_id,
        command_kind=pend.kind,
        reason=reason,
    )
    ctx.count(f"{pend.kind}_failed")
    ctx.count("gave_up")
    instruments.gave_up(pend.account_id, pend.kind)
    trade = ctx.state.trades.get(pend.trade_id)
    pos = trade.positions.get(pend.account_id) if trade else None
    if trade is not None and pos is not None:
        pos.in_flight.discard(cmd.command_id)
        if opening:
            pos.failed = True
        pump(ctx, trade, pos, tx)
        maybe_forget(ctx, trade)


def pump(
    ctx: Context, trade: Trade, pos: SlavePosition, tx: Tx, closes: list[dict[str, object]] | None = None
) -> None:
    """Issue the next queued operation of a position once nothing is in flight on it. Each close decided
    is logged (``core_close_decided``), or added to ``closes`` for the caller's one line per fan-out."""
    # Commands are issued whether the terminal is online or not: once journaled they survive a restart
    # and go out when it is back. Only a position recovered from the store waits for its symbol spec.
    acc = ctx.state.accounts.get(pos.account_id)
    if acc is not None and acc.registration is m.RegistrationStatus.REJECTED:
        return  # held until a handshake or a re-evaluation accepts the account
    if pos.spec is None:
        pos.spec = acc.symbols.get(trade.canonical) if acc is not None else None
    spec = pos.spec
    while spec is not None and not pos.in_flight and pos.queue:
        op = pos.queue.popleft()
        if op.event_id is not None:
            # Recorded with what the operation produces (or with nothing, when there is nothing to
            # apply): a restart re-queues exactly the master events without this mark.
            ctx.record(
                tx,
                "op_applied",
                level=None,
                trade_id=trade.row.trade_id,
                account_id=pos.account_id,
                event_id=op.event_id,
                op=op.kind,
            )
        if not pos.tickets:
            if pos.failed or pos.opened:
                log.info(
                    "core_nothing_to_apply",
                    trade_id=trade.row.trade_id,
                    slave=pos.account_id,
                    op=op.kind,
                    reason="open failed"
                    if pos.failed
                    else f"closed by the broker ({pos.closed_by_broker})"
                    if pos.closed_by_broker
                    else "no open tickets",
                )
            continue
        intent = trade.intent
        for ticket, lots in sorted(pos.tickets.items()):
            cmd: m.Command
            if op.kind == "close":
                plan = plan_partial_close(lots, op.fraction, spec)
                if plan.lots <= 0:
                    ctx.record(
                        tx,
                        "partial_close_skipped",
                        trade_id=intent.trade_id,
                        account_id=pos.account_id,
                        trace_id=intent.trace_id,
                        ticket=ticket,
                        lots=lots,
                        fraction=op.fraction,
                        reason=plan.reason,
                    )
                    continue
                cmd = m.CloseOrder(
                    ctx.ids.uuid7(),
                    intent.trade_id,
                    intent.trace_id,
                    ticket,
                    pos.broker_symbol,
                    plan.lots,
                    intent.magic_number,
                )
                decided = {
                    "slave": pos.account_id,
                    "ticket": ticket,
                    "lots": plan.lots,
                    "full": plan.full,
                    "reason": plan.reason,
                    "command_id": cmd.command_id,
                    "event_id": op.event_id,
                }
                if closes is not None:
                    closes.append(decided)
                else:
                    tx.log.info(
                        "core_close_decided", trade_id=intent.trade_id, trace_id=intent.trace_id, **decided
                    )
            elif op.kind == "modify":
                if op.exact:
                    sl, tp = op.stop_loss, op.take_profit
                    pos.after_fill = (sl, tp)
                else:
                    policy = ctx.policies.for_account(pos.account_id)
                    entry = pos.entry_price or intent.price
                    sl, tp = modified_stops(policy, intent.side, spec, op.stop_loss, op.take_profit, entry)
                    pos.after_fill = None  # the master's new levels supersede stops still waiting
                cmd = m.ModifyOrder(
                    ctx.ids.uuid7(),
                    intent.trade_id,
                    intent.trace_id,
                    ticket,
                    pos.broker_symbol,
                    sl,
                    tp,
                )
            else:  # pragma: no cover - opens are issued by master.decide_copy only
                continue
            issue(ctx, trade, pos, cmd, op.kind, tx)
            if op.exact:
                pos.after_fill_command = cmd.command_id


def maybe_forget(ctx: Context, trade: Trade) -> None:
    """A closed trade leaves memory once every slave position is flat and idle.

    Its trade_id stays known for dedupe."""
    if trade.closed and all(
        not p.in_flight and not p.tickets and not p.queue for p in trade.positions.values()
    ):
        ctx.state.trades.pop(trade.row.trade_id, None)
        log.info("core_trade_complete", trade_id=trade.row.trade_id, trace_id=trade.row.trace_id)


def revive(ctx: Context, account_id: str, tx: Tx) -> None:
    """The slave's terminal is back: commands it has not answered go out again now, with the same
    command_ids (the terminal answers a repeated one with its stored result); a close or modify that got
    no answer after every send is revived (never abandoned); then work that waited for the account."""
    st = ctx.state
    for pend in list(st.pending.values()):
        if pend.account_id == account_id:
            drive(ctx, pend, delivery.Reconnected(), tx)
    for command_id, pend in list(st.given_up.items()):
        if pend.account_id == account_id and pend.kind != "execute":
            del st.given_up[command_id]
            pend.state = replace(pend.state, outcome=delivery.Outcome.PENDING)
            st.pending[command_id] = pend
            trade = st.trades.get(pend.trade_id)
            if trade is not None and account_id in trade.positions:
                trade.positions[account_id].in_flight.add(command_id)
            log.warning(
                "core_command_revived",
                command_id=command_id,
                slave=account_id,
                kind=pend.kind,
                attempt=pend.state.attempt,
            )
            drive(ctx, pend, delivery.Reconnected(), tx)
    pump_account(ctx, account_id, tx)


def pump_account(ctx: Context, account_id: str, tx: Tx) -> None:
    """Issue what waited for an account, trade by trade."""
    for trade in ctx.state.trades.values():
        pos = trade.positions.get(account_id)
        if pos is not None:
            pump(ctx, trade, pos, tx)
