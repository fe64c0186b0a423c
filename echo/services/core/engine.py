"""Core's synchronous engine: ``apply`` changes the state for a group of messages and returns the
transaction to persist and send. Every message type has one handler in ``HANDLERS`` (master events,
slave reports, account changes, the Agents' acks); ``gate`` stands before the master events (unknown,
unlisted or REJECTED accounts); ``rollback`` undoes what a refused transaction did to master-side state.
Nothing here awaits or reads the wall clock: the async shell (``service.py``) owns time and I/O."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeAlias

import structlog

from echo.delivery import machine as delivery
from echo.domain import messages as m
from echo.domain.types import Role
from echo.services.core import accounts, master, positions, reports
from echo.services.core.context import Context
from echo.services.core.state import Account
from echo.services.core.tx import Tx, retry_acks, settle_sync

log = structlog.get_logger("echo.core")

MasterEvent: TypeAlias = m.TradeIntent | m.TradeClose | m.TradeModify


def _intent(ctx: Context, acc: Account, msg: m.FromAccount, tx: Tx) -> None:
    assert isinstance(msg.message, m.TradeIntent)
    master.on_intent(ctx, acc, msg.message, msg.received_ms, tx)


def _close(ctx: Context, acc: Account, msg: m.FromAccount, tx: Tx) -> None:
    assert isinstance(msg.message, m.TradeClose)
    master.on_close(ctx, acc, msg.message, tx)


def _modify(ctx: Context, acc: Account, msg: m.FromAccount, tx: Tx) -> None:
    assert isinstance(msg.message, m.TradeModify)
    master.on_modify(ctx, acc, msg.message, tx)


def _result(ctx: Context, acc: Account, msg: m.FromAccount, tx: Tx) -> None:
    assert isinstance(msg.message, m.ExecutionResult | m.CloseResult | m.ModifyResult)
    reports.on_result(ctx, acc, msg.message, tx)


def _quotes(ctx: Context, acc: Account, msg: m.FromAccount, tx: Tx) -> None:
    assert isinstance(msg.message, m.Quotes)
    reports.on_quotes(ctx, acc, msg.message, msg.received_ms, tx)


def _snapshot(ctx: Context, acc: Account, msg: m.FromAccount, tx: Tx) -> None:
    assert isinstance(msg.message, m.StateSnapshot)
    reports.on_snapshot(ctx, acc, msg.message, msg.received_ms, tx)


AccountHandler: TypeAlias = Callable[[Context, Account, m.FromAccount, Tx], None]

HANDLERS: dict[type, AccountHandler] = {
    # what a terminal says, by message type -> the handler (after ``gate`` for master events)
    m.TradeIntent: _intent,
    m.TradeClose: _close,
    m.TradeModify: _modify,
    m.ExecutionResult: _result,
    m.CloseResult: _result,
    m.ModifyResult: _result,
    m.Quotes: _quotes,
    m.StateSnapshot: _snapshot,
}
"""A terminal's message with no entry here (a handshake reply, a heartbeat) changes nothing in Core."""

AgentHandler: TypeAlias = Callable[[Context, str, Any, Tx], None]

AGENT_HANDLERS: dict[type, AgentHandler] = {
    # what an Agent says about its accounts and its hop
    m.AccountOnline: accounts.on_online,
    m.AccountOffline: accounts.on_offline,
    m.CommandAck: reports.on_command_ack,
}


def apply(ctx: Context, msgs: list[tuple[str, m.AgentToCore]]) -> Tx:
    """Change the state for a group of messages; the transaction holds what to persist and send. Bad
    input is logged and dropped; nothing here raises, and nothing here awaits (the change is atomic)."""
    tx = Tx()
    for agent_id, msg in msgs:
        try:
            dispatch(ctx, agent_id, msg, tx)
        except Exception:
            log.exception("core_message_failed", agent_id=agent_id, message=type(msg).__name__)
    return settle_sync(tx)


def timers_due(ctx: Context, command_ids: list[str]) -> Tx:
    """The retry timers of these commands fired: each one's delivery machine decides (send again, give
    up, or nothing: a timer that is not due any more)."""
    tx = Tx()
    for command_id in command_ids:
        pend = ctx.state.pending.get(command_id)
        if pend is not None:
            positions.drive(ctx, pend, delivery.Timeout(), tx)
    return settle_sync(tx)


def dispatch(ctx: Context, agent_id: str, msg: m.AgentToCore, tx: Tx) -> None:
    if isinstance(msg, m.FromAccount):
        acc = ctx.state.accounts.get(msg.account_id)
        if acc is None:
            unknown_account(ctx, agent_id, msg, tx)
            return
        if not accounts.owned_by(ctx, acc, agent_id, type(msg.message).__name__):
            return
        if accounts.from_the_future(ctx, agent_id, msg.received_ms, type(msg.message).__name__):
            return
        if isinstance(msg.message, MasterEvent) and not gate(ctx, acc, msg.message, tx):
            return
        handler = HANDLERS.get(type(msg.message))
        if handler is not None:
            handler(ctx, acc, msg, tx)
        return
    agent_handler = AGENT_HANDLERS.get(type(msg))
    if agent_handler is not None:
        agent_handler(ctx, agent_id, msg, tx)


def unknown_account(ctx: Context, agent_id: str, msg: m.FromAccount, tx: Tx) -> None:
    """A terminal Core keeps no account of: its master events are refused, never stored (RETRY when the
    configuration lists it as a master: a Core that has not heard of it yet may still accept it)."""
    log.warning("core_message_from_unknown_account", account_id=msg.account_id)
    inner = msg.message
    if not isinstance(inner, MasterEvent):
        return
    allowed = ctx.config.allows(msg.account_id, Role.MASTER)
    ctx.count("events_from_unknown_accounts")
    tx.direct.append(
        (
            agent_id,
            m.ToAccount(
                msg.account_id,
                m.TradeIntentAck(
                    inner.trade_id,
                    inner.trace_id,
                    m.AckStatus.RETRY if allowed else m.AckStatus.REJECTED,
                    getattr(inner, "event_id", None),
                    message=f"account {msg.account_id} is not known to Core"
                    + ("" if allowed else ": it is not a master in core.follow"),
                ),
            ),
        )
    )


def gate(ctx: Context, acc: Account, inner: MasterEvent, tx: Tx) -> bool:
    """Whether a master event may be handled: an intent from an account that is not a master in
    ``core.follow`` is REJECTED; any master event from a REJECTED account gets RETRY (the master keeps it
    and sends it again once a handshake or re-evaluation accepts the account)."""
    if isinstance(inner, m.TradeIntent) and not ctx.config.allows(acc.account_id, Role.MASTER):
        ctx.count("intents_from_unlisted_masters")
        log.error(
            "core_intent_refused",
            account_id=acc.account_id,
            trade_id=inner.trade_id,
            reason="not a master in core.follow",
        )
        tx.ack(
            acc.account_id,
            inner.trade_id,
            inner.trace_id,
            m.AckStatus.REJECTED,
            None,
            f"account {acc.account_id} is not a master in core.follow: its trades are not copied",
        )
        return False
    if acc.registration is m.RegistrationStatus.REJECTED:
        log.warning("core_event_from_rejected_account", account_id=acc.account_id, trade_id=inner.trade_id)
        tx.ack(
            acc.account_id,
            inner.trade_id,
            inner.trace_id,
            m.AckStatus.RETRY,
            getattr(inner, "event_id", None),
            "this account's handshake was REJECTED (see symbol_registration_result)",
        )
        return False
    return True


def rollback(ctx: Context, tx: Tx) -> None:
    """Undo what the unrecorded batch did to master-side state, so the masters' retries are handled as
    new: intents are forgotten, close/modify events unseen (their queued operations dropped), and the
    commands they produced are not pending. Results from slaves stay applied in memory (the terminal
    will not send them again); their rows are missing from the store."""
    st = ctx.state
    closed_now = {u.trade_id for u in tx.batch.trade_updates if u.status == "closed"}
    for out in tx.sends:
        ack = out.message
        if not isinstance(ack, m.TradeIntentAck) or ack.event_id is None:
            continue
        trade = st.trades.get(ack.trade_id)
        if trade is None:
            continue
        trade.events_seen.discard(ack.event_id)
        for position in trade.positions.values():
            position.queue = deque(op for op in position.queue if op.event_id != ack.event_id)
        if ack.trade_id in closed_now:
            trade.closed = False
    for row in tx.batch.commands:
        pend = st.pending.pop(row.command_id, None)
        if pend is None:
            continue
        owner = st.trades.get(pend.trade_id)
        pos = owner.positions.get(pend.account_id) if owner else None
        if pos is not None:
            pos.in_flight.discard(row.command_id)
    for trade_row in tx.batch.trades:
        st.trades.pop(trade_row.trade_id, None)
        st.seen_trade_ids.discard(trade_row.trade_id)
    tx.sends = retry_acks(tx)
    tx.drops = []


def stale(ctx: Context, out: m.ToAccount) -> bool:
    """Not worth sending once a held transaction is written: an acknowledgement its masters got as RETRY,
    or a command answered since, or sent again since (a later send carries the later attempt)."""
    msg = out.message
    if isinstance(msg, m.TradeIntentAck):
        return True
    if isinstance(msg, m.ExecuteOrder | m.CloseOrder | m.ModifyOrder):
        pend = ctx.state.pending.get(msg.command_id)
        return pend is None or pend.state.attempt > msg.attempt
    return False


def trade_of_command(ctx: Context, command_id: str) -> str | None:
    """The trade a command belongs to (the router keeps a trade's messages in order)."""
    pend = ctx.state.pending.get(command_id) or ctx.state.given_up.get(command_id)
    return pend.trade_id if pend is not None else None
