"""A simulated master EA: trades on its SimBroker and reports every open, close and modify to the Agent.

The trading methods (``open``, ``partial_close``, ``modify``, ``close``) are what a person or a strategy
does on the master terminal: each fills on the broker first, then emits ``trade_intent``, ``trade_close``
or ``trade_modify``. Lines stay pending until the Agent acks them (``trade_intent_ack`` by trade_id, or by
event_id for close/modify events).

Every pending line follows ``echo.delivery.machine.intent_transition``, the IntentQueue of the MQL4 master:
``Connected`` after every (re)connection's handshake (and for a new line while connected) sends it,
``Acked`` on its ``trade_intent_ack``, ``Timeout`` from a timer task that sleeps until the earliest retry
time. A line whose send or ack was lost goes out again under the same ids with ``attempt + 1`` after
``ack_timeout + backoff``, and one answered RETRY after ``retry_backoff_ms``; after ``max_retries`` sends it
pauses until the next reconnect. The timing is the
Agent's ``delivery_config`` (``Settings()`` until one arrives). With ``queue_path`` the pending lines are
kept in a JSON-lines file (the protocol line and the lifecycle state), so a restarted terminal with the
same file sends them again after its handshake.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from echo.delivery import machine as dm
from echo.domain import ids
from echo.domain import messages as m
from echo.domain.types import Role, Side
from echo.pipe.codec import EA_TO_AGENT, Decoded
from echo.sim import jsonl, strategy
from echo.sim.broker import SimBroker
from echo.sim.terminal import DISCONNECTS, SimTerminal, identity_beside

log = logging.getLogger(__name__)

MasterEvent = m.TradeIntent | m.TradeClose | m.TradeModify


@dataclass(slots=True)
class MasterTrade:
    """A trade as the master terminal sees it; ``ticket`` follows partial closes to the remainder."""

    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    side: Side
    lots: float
    is_open: bool = True
    plan_partial: bool = False
    plan_modify: bool = False


@dataclass(slots=True)
class _Pending:
    """One unacknowledged line: the payload as last written and its delivery lifecycle."""

    payload: MasterEvent
    state: dm.Intent = field(default_factory=dm.Intent)


_FINISHED = (dm.IntentStatus.ACKED, dm.IntentStatus.DROPPED)


class SimMasterEA(SimTerminal):
    """One master terminal. ``symbols`` are the broker symbols ``run_script`` trades (default: all)."""

    _role = Role.MASTER
    _log = log

    def __init__(
        self,
        account_id: str,
        broker: SimBroker,
        connect: Callable[[], Awaitable[trio.abc.Stream]],
        now_ms: Callable[[], int],
        rng: random.Random,
        *,
        symbols: list[str] | None = None,
        reconnect_delay: float = 0.2,
        symbol_mappings: dict[str, str] | None = None,
        magic_number: int = 1001,
        heartbeat_interval: float = 2.0,
        client_semver: str = "0.1.0",
        queue_path: str | Path | None = None,
        token: str = "",
    ) -> None:
        super().__init__(
            account_id,
            broker,
            connect,
            now_ms,
            reconnect_delay=reconnect_delay,
            heartbeat_interval=heartbeat_interval,
            client_semver=client_semver,
            identity_path=identity_beside(queue_path),
            token=token,
        )
        self.rng = rng
        self.symbols = list(symbols) if symbols is not None else list(broker.specs)
        for symbol in self.symbols:
            broker.spec(symbol)
        self.symbol_mappings = dict(symbol_mappings or {})
        self.magic_number = magic_number

        self.trades: dict[str, MasterTrade] = {}
        self.trades_opened = 0
        self.partials = 0
        self.modifies = 0
        self.closes = 0
        self.intent_written_ns: dict[str, int] = {}
        self.acked: set[str] = set()
        self.rejected: dict[str, m.TradeIntentAck] = {}
        self.resends = 0
        """Lines written again (attempt > 1)."""
        self.settings = dm.Settings()
        """Delivery timing: the Agent's last ``delivery_config``, defaults until one arrives."""
        self.delivery_config: m.DeliveryConfig | None = None
        self._pending: dict[str, _Pending] = {}
        self._acks_changed = trio.Event()
        self._timer_wake = trio.Event()
        self._timer_at: int | None = None
        """When the timer task will next wake by itself (None: only when woken)."""
        self.queue_path = Path(queue_path) if queue_path is not None else None
        if self.queue_path is not None:
            self._load_queue(self.queue_path)

    def open_trades(self) -> list[MasterTrade]:
        return [t for t in self.trades.values() if t.is_open]

    @property
    def pending(self) -> int:
        """Lines not yet acked by the Agent."""
        return len(self._pending)

    async def wait_all_acked(self) -> None:
        """Return once every emitted line has been acked (or rejected)."""
        while self._pending:
            await self._acks_changed.wait()

    # ------------------------------------------------------------------------------------------ connection

    def _symbol_mappings(self) -> dict[str, str]:
        return dict(self.symbol_mappings)

    async def _after_handshake(self, stream: trio.abc.Stream) -> None:
        """Send the pending lines after every (re)connection's handshake (the write lock is held)."""
        for key in list(self._pending):
            await self._step_and_send(stream, key, dm.Connected())

    def _start_tasks(self, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._retry_timer, stream)

    async def _emit(self, key: str, payload: MasterEvent) -> None:
        async with self._lock:
            self._pending[key] = pending = _Pending(payload)
            self._persist(key, pending)
            stream = self._stream
            if stream is None:
                return  # queued: the next handshake sends it
            try:
                await self._step_and_send(stream, key, dm.Connected())
            except DISCONNECTS:
                # the reader sees the closed stream and reconnects; the line stays pending
                self._stream = None
                await trio.aclose_forcefully(stream)

    # ------------------------------------------------------------------------------------------ lifecycle

    def _step(self, key: str, event: dm.IntentInput) -> int | None:
        """Feed ``event`` to the line's lifecycle and carry out its effects, except the send: the attempt
        to write, if any, is returned to the caller (who holds the write lock)."""
        pending = self._pending.get(key)
        if pending is None:
            return None
        state, effects = dm.intent_transition(pending.state, event, self._now_ms(), self.settings)
        pending.state = state
        send: int | None = None
        for effect in effects:
            if isinstance(effect, dm.Persist):
                self._persist(key, pending)
            elif isinstance(effect, dm.Send):
                send = effect.attempt
            elif isinstance(effect, dm.RetryAt):
                self._schedule(effect.at_ms)
            elif isinstance(effect, dm.Done):
                del self._pending[key]
                self._acks_changed.set()
                self._acks_changed = trio.Event()
            elif isinstance(effect, dm.Alert):
                log.warning("%s: %s: %s", self.account_id, key, effect.reason)
            elif isinstance(effect, dm.Invalid):
                log.warning(
                    "%s: %s: %s in %s: %s", self.account_id, key, effect.input, effect.state, effect.reason
                )
            elif isinstance(effect, dm.Ignore):
                log.debug("%s: %s: %s", self.account_id, key, effect.reason)
        return send

    async def _step_and_send(self, stream: trio.abc.Stream, key: str, event: dm.IntentInput) -> None:
        """``_step``, then write the line if the lifecycle says so (the caller holds the write lock)."""
        attempt = self._step(key, event)
        pending = self._pending.get(key)
        if attempt is None or pending is None:
            return
        pending.payload = dataclasses.replace(pending.payload, attempt=attempt)
        if attempt > 1:
            self.resends += 1
        if isinstance(pending.payload, m.TradeIntent):
            self.intent_written_ns.setdefault(pending.payload.trade_id, time.perf_counter_ns())
        await self._send_line(stream, pending.payload)

    def _schedule(self, at_ms: int) -> None:
        """A retry is due at ``at_ms``: wake the timer task if it would sleep past that."""
        if self._timer_at is None or at_ms < self._timer_at:
            self._timer_wake.set()

    def _next_due(self) -> int | None:
        due = [
            p.state.next_retry_at_ms
            for p in self._pending.values()
            if p.state.status is dm.IntentStatus.SENT and p.state.next_retry_at_ms is not None
        ]
        return min(due, default=None)

    async def _retry_timer(self, stream: trio.abc.Stream) -> None:
        """Feed ``Timeout`` to the lines whose retry time has come, for as long as this connection lasts."""
        while True:
            self._timer_wake = wake = trio.Event()
            self._timer_at = at = self._next_due()
            if at is None:
                await wake.wait()
                continue
            delay_ms = at - self._now_ms()
            if delay_ms > 0:
                with trio.move_on_after(delay_ms / 1000):
                    await wake.wait()
                continue
            self._timer_at = None
            async with self._lock:
                if self._stream is not stream:
                    return
                now = self._now_ms()
                for key, pending in list(self._pending.items()):
                    due = pending.state.next_retry_at_ms
                    if due is not None and due <= now:
                        await self._step_and_send(stream, key, dm.Timeout())

    async def _on_message(self, stream: trio.abc.Stream, nursery: trio.Nursery, event: Decoded) -> bool:
        p = event.payload
        if isinstance(p, m.TradeIntentAck):
            self._on_ack(p)
        elif isinstance(p, m.DeliveryConfig):
            self.delivery_config = p
            self.settings = dataclasses.replace(
                self.settings,
                ack_timeout_ms=p.ack_timeout_ms,
                retry_backoff_ms=p.retry_backoff_ms,
                max_retries=p.max_retries,
            )
        else:
            return False
        return True

    def _on_ack(self, ack: m.TradeIntentAck) -> None:
        key = ack.event_id if ack.event_id is not None else ack.trade_id
        pending = self._pending.get(key)
        if pending is None:
            log.debug("%s: late %s ack for %s", self.account_id, ack.status.value, key)
            return
        sent = self._step(key, dm.Acked(ack.status.value))
        assert sent is None, "an ack never sends"
        if pending.state.status is dm.IntentStatus.DROPPED:
            log.warning("%s: %s rejected: %s %s", self.account_id, key, ack.error_code.value, ack.message)
            self.rejected[key] = ack
        elif pending.state.status is dm.IntentStatus.ACKED:
            self.acked.add(key)

    # ------------------------------------------------------------------------------------------ queue file

    def _record(self, key: str, pending: _Pending) -> dict[str, Any]:
        st = pending.state
        return {
            "key": key,
            "line": jsonl.line_of(pending.payload, self._now_ms()),
            "status": st.status.value,
            "attempt": st.attempt,
            "next_retry_at_ms": st.next_retry_at_ms,
        }

    def _persist(self, key: str, pending: _Pending) -> None:
        """Record a line's new state: appended while pending, the file rewritten once it is finished."""
        if self.queue_path is None:
            return
        if pending.state.status in _FINISHED:
            live = [(k, p) for k, p in self._pending.items() if p.state.status not in _FINISHED]
            jsonl.rewrite(self.queue_path, [self._record(k, p) for k, p in live])
        else:
            jsonl.append(self.queue_path, self._record(key, pending))

    def _load_queue(self, path: Path) -> None:
        """Take over the pending lines a previous run left in ``path`` (the last record of a key wins)."""
        latest: dict[str, dict[str, Any]] = {}
        for record in jsonl.read(path):
            key = record.get("key")
            if isinstance(key, str):
                latest[key] = record  # keeps the key's first place: lines go out in emission order
        for key, record in latest.items():
            payload = jsonl.payload_of(record.get("line"), EA_TO_AGENT)
            if not isinstance(payload, m.TradeIntent | m.TradeClose | m.TradeModify):
                log.warning("%s: %s: dropping a queue record without a trade line", self.account_id, key)
                continue
            try:
                status = dm.IntentStatus(record.get("status"))
                attempt = int(record.get("attempt", 0))
                at = record.get("next_retry_at_ms")
                state = dm.Intent(status, attempt, int(at) if at is not None else None)
            except (TypeError, ValueError) as exc:
                log.warning("%s: %s: bad queue record: %s", self.account_id, key, exc)
                continue
            if status not in _FINISHED:
                self._pending[key] = _Pending(payload, state)
        jsonl.rewrite(path, [self._record(k, p) for k, p in self._pending.items()])
        if self._pending:
            log.info("%s: %d pending line(s) from %s", self.account_id, len(self._pending), path)

    # ------------------------------------------------------------------------------------------ trading

    async def open(
        self,
        symbol: str,
        side: Side,
        lots: float,
        stop_loss: float | None = None,
        take_profit: float | None = None,
    ) -> str:
        """Open a market position on the master's broker and report it; returns the new trade_id."""
        now = self._now_ms()
        order = self.broker.market_order(
            symbol, side, lots, stop_loss, take_profit, self.magic_number, "", now
        )
        trade_id = ids.uuid7(now, self.rng.randbytes(10))
        trace_id = ids.trace_id_from(self.rng.randbytes(16))
        self.trades[trade_id] = MasterTrade(trade_id, trace_id, order.ticket, symbol, side, order.lots)
        self.trades_opened += 1
        intent = m.TradeIntent(
            trade_id=trade_id,
            trace_id=trace_id,
            symbol=symbol,
            side=side,
            lot_size=order.lots,
            price=order.open_price,
            magic_number=self.magic_number,
            ticket=order.ticket,
            stop_loss=order.stop_loss,
            take_profit=order.take_profit,
            opened_at_ms=order.open_time_ms,
        )
        await self._emit(trade_id, intent)
        return trade_id

    async def partial_close(self, trade_id: str, lots: float) -> None:
        """Close ``lots`` of a trade (all of it if ``lots`` covers the position) and report it."""
        trade = self._open_trade(trade_id)
        now = self._now_ms()
        fill = self.broker.close(trade.ticket, lots, now)
        event_id = ids.uuid7(now, self.rng.randbytes(10))
        close = m.TradeClose(
            event_id=event_id,
            trade_id=trade_id,
            trace_id=trade.trace_id,
            ticket=trade.ticket,
            symbol=trade.symbol,
            lot_size=fill.closed_lots,
            remaining_lots=fill.remaining_lots,
            price=fill.price,
            magic_number=self.magic_number,
            new_ticket=fill.new_ticket,
        )
        if fill.new_ticket is None:
            trade.is_open = False
            trade.lots = 0.0
            self.closes += 1
        else:
            trade.ticket = fill.new_ticket
            trade.lots = fill.remaining_lots
            self.partials += 1
        await self._emit(event_id, close)

    async def close(self, trade_id: str) -> None:
        """Close a trade fully and report it."""
        await self.partial_close(trade_id, self._open_trade(trade_id).lots)

    async def modify(self, trade_id: str, stop_loss: float | None, take_profit: float | None) -> None:
        """Change a trade's SL/TP and report it."""
        trade = self._open_trade(trade_id)
        order = self.broker.modify(trade.ticket, stop_loss, take_profit)
        event_id = ids.uuid7(self._now_ms(), self.rng.randbytes(10))
        modify = m.TradeModify(
            event_id=event_id,
            trade_id=trade_id,
            trace_id=trade.trace_id,
            ticket=trade.ticket,
            symbol=trade.symbol,
            magic_number=self.magic_number,
            stop_loss=order.stop_loss,
            take_profit=order.take_profit,
        )
        self.modifies += 1
        await self._emit(event_id, modify)

    def _open_trade(self, trade_id: str) -> MasterTrade:
        trade = self.trades.get(trade_id)
        if trade is None or not trade.is_open:
            raise KeyError(f"no open trade {trade_id}")
        return trade

    # ------------------------------------------------------------------------------------------ script

    async def run_script(self, n_trades: int, *, max_open: int = 3, pace: float = 0.05) -> None:
        """A random strategy on this terminal (``echo.sim.strategy.run_script``)."""
        await strategy.run_script(self, n_trades, max_open=max_open, pace=pace)

    async def burst(self, n_trades: int) -> list[str]:
        """A load spike on this terminal (``echo.sim.strategy.burst``)."""
        return await strategy.burst(self, n_trades)
