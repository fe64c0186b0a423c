"""A simulated master EA: trades on its SimBroker and reports every open, close and modify to the Agent.

The trading methods (``open``, ``partial_close``, ``modify``, ``close``) are what a person or a strategy
does on the master terminal: each fills on the broker first, then emits ``trade_intent``, ``trade_close``
or ``trade_modify``. Lines stay pending until the Agent acks them (``trade_intent_ack`` by trade_id, or by
event_id for close/modify events); pending lines are written after every (re)connection's handshake, and a
line that was already written goes out again with ``attempt + 1`` under the same ids.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from echo.domain import ids
from echo.domain import messages as m
from echo.domain.types import Role, Side
from echo.pipe.codec import AGENT_TO_EA, DecodeFailure, LineDecoder, encode
from echo.sim.broker import BrokerError, SimBroker

log = logging.getLogger(__name__)

_DISCONNECTS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

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
    payload: MasterEvent
    sends: int = 0


class SimMasterEA:
    """One master terminal. ``symbols`` are the broker symbols ``run_script`` trades (default: all)."""

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
    ) -> None:
        self.account_id = account_id
        self.broker = broker
        self._connect = connect
        self._now_ms = now_ms
        self.rng = rng
        self.symbols = list(symbols) if symbols is not None else list(broker.specs)
        for symbol in self.symbols:
            broker.spec(symbol)
        self.reconnect_delay = reconnect_delay
        self.symbol_mappings = dict(symbol_mappings or {})
        self.magic_number = magic_number
        self.heartbeat_interval = heartbeat_interval
        self.client_semver = client_semver

        self.trades: dict[str, MasterTrade] = {}
        self.trades_opened = 0
        self.partials = 0
        self.modifies = 0
        self.closes = 0
        self.connections = 0
        self.intent_written_ns: dict[str, int] = {}
        self.acked: set[str] = set()
        self.rejected: dict[str, m.TradeIntentAck] = {}
        self.errors_received: list[m.ErrorReply] = []
        self._pending: dict[str, _Pending] = {}
        self._stream: trio.abc.Stream | None = None
        self._lock = trio.Lock()
        self._acks_changed = trio.Event()
        self._heartbeat_seq = 0

    @property
    def connected(self) -> bool:
        """True between a completed handshake write and the loss of that connection."""
        return self._stream is not None

    def handshake(self) -> m.Handshake:
        return m.Handshake(
            account_id=self.account_id,
            role=Role.MASTER,
            protocol_version=m.PROTOCOL_VERSION,
            client_semver=self.client_semver,
            client_id=f"sim-{self.account_id}",
            broker=self.broker.name,
            symbols=list(self.broker.specs.values()),
            symbol_mappings=dict(self.symbol_mappings),
        )

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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, handshake, flush pending lines and read acks until cancelled; reconnect on any drop."""
        started = False
        while True:
            stream: trio.abc.Stream | None = None
            try:
                stream = await self._connect()
                self.connections += 1
                async with self._lock:
                    await stream.send_all(encode(self.handshake(), self._now_ms()))
                    for pending in list(self._pending.values()):
                        await self._send(stream, pending)
                    self._stream = stream
                if not started:
                    started = True
                    task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._heartbeats, stream)
                    await self._read(stream, nursery)
                    nursery.cancel_scope.cancel()
            except* _DISCONNECTS as group:
                log.info("%s: connection lost: %r", self.account_id, group.exceptions)
            finally:
                self._stream = None
                if stream is not None:
                    await trio.aclose_forcefully(stream)
            await trio.sleep(self.reconnect_delay)

    async def _send(self, stream: trio.abc.Stream, pending: _Pending) -> None:
        """Write one pending line (caller holds the lock); a re-send carries ``attempt + 1``."""
        if pending.sends > 0:
            pending.payload = dataclasses.replace(pending.payload, attempt=pending.payload.attempt + 1)
        pending.sends += 1
        if isinstance(pending.payload, m.TradeIntent):
            self.intent_written_ns.setdefault(pending.payload.trade_id, time.perf_counter_ns())
        await stream.send_all(encode(pending.payload, self._now_ms()))

    async def _emit(self, key: str, payload: MasterEvent) -> None:
        async with self._lock:
            pending = _Pending(payload)
            self._pending[key] = pending
            stream = self._stream
            if stream is None:
                return
            try:
                await self._send(stream, pending)
            except _DISCONNECTS:
                # the reader sees the closed stream and reconnects; the line stays pending
                self._stream = None
                await trio.aclose_forcefully(stream)

    async def _heartbeats(self, stream: trio.abc.Stream) -> None:
        while True:
            await trio.sleep(self.heartbeat_interval)
            self._heartbeat_seq += 1
            async with self._lock:
                await stream.send_all(encode(m.Heartbeat(self._heartbeat_seq), self._now_ms()))

    async def _read(self, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        decoder = LineDecoder(AGENT_TO_EA)
        while True:
            data = await stream.receive_some()
            if not data:
                return
            for event in decoder.feed(bytes(data)):
                if isinstance(event, DecodeFailure):
                    log.warning("%s: undecodable line from agent: %s", self.account_id, event.message)
                    self.errors_received.append(m.ErrorReply(event.code.value, event.message, event.ref_type))
                elif isinstance(event.payload, m.TradeIntentAck):
                    self._on_ack(event.payload, stream, nursery)
                elif isinstance(event.payload, m.ErrorReply):
                    log.warning(
                        "%s: agent error %s: %s", self.account_id, event.payload.code, event.payload.message
                    )
                    self.errors_received.append(event.payload)
                else:
                    log.debug("%s: ignoring %s", self.account_id, event.type)

    def _on_ack(self, ack: m.TradeIntentAck, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        key = ack.event_id if ack.event_id is not None else ack.trade_id
        if ack.status is m.AckStatus.RETRY:
            nursery.start_soon(self._resend_later, stream, key)
            return
        if self._pending.pop(key, None) is None:
            return
        if ack.status is m.AckStatus.REJECTED:
            log.warning("%s: %s rejected: %s %s", self.account_id, key, ack.error_code.value, ack.message)
            self.rejected[key] = ack
        else:
            self.acked.add(key)
        self._acks_changed.set()
        self._acks_changed = trio.Event()

    async def _resend_later(self, stream: trio.abc.Stream, key: str) -> None:
        await trio.sleep(self.reconnect_delay)
        async with self._lock:
            pending = self._pending.get(key)
            if pending is not None and self._stream is stream:
                await self._send(stream, pending)

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
        """A random strategy: opens ``n_trades`` trades (at most ``max_open`` at once), partially closes
        about a quarter of them, modifies about 30%, and closes every one; the master ends flat."""
        opened = 0
        while opened < n_trades or self.open_trades():
            await trio.sleep(pace * self.rng.uniform(0.5, 1.5))
            live = self.open_trades()
            if opened < n_trades and len(live) < max_open and (not live or self.rng.random() < 0.5):
                await self._random_open()
                opened += 1
            elif live:
                await self._random_action(self.rng.choice(live))

    async def _random_open(self) -> None:
        symbol = self.rng.choice(self.symbols)
        side = self.rng.choice((Side.BUY, Side.SELL))
        spec = self.broker.spec(symbol)
        lots = spec.clamp_lots(self.rng.randint(1, 10) / 10)
        stop_loss, take_profit = self._random_stops(symbol, side)
        trade_id = await self.open(symbol, side, lots, stop_loss, take_profit)
        trade = self.trades[trade_id]
        trade.plan_partial = self.rng.random() < 0.25 and self._partial_lots(trade) is not None
        trade.plan_modify = self.rng.random() < 0.3

    async def _random_action(self, trade: MasterTrade) -> None:
        plans = (["partial"] if trade.plan_partial else []) + (["modify"] if trade.plan_modify else [])
        action = self.rng.choice(plans) if plans else "close"
        try:
            if action == "partial":
                trade.plan_partial = False
                lots = self._partial_lots(trade)
                if lots is not None:
                    await self.partial_close(trade.trade_id, lots)
            elif action == "modify":
                trade.plan_modify = False
                await self.modify(trade.trade_id, *self._random_stops(trade.symbol, trade.side))
            else:
                await self.close(trade.trade_id)
        except BrokerError as exc:
            log.warning("%s: %s of %s refused: %s", self.account_id, action, trade.trade_id, exc)

    def _random_stops(self, symbol: str, side: Side) -> tuple[float, float]:
        """SL and TP 300-1500 points from the closing price, on the correct sides."""
        spec = self.broker.spec(symbol)
        bid, ask = self.broker.quote(symbol)
        sl_dist = self.rng.randint(300, 1500) * spec.point
        tp_dist = self.rng.randint(300, 1500) * spec.point
        if side is Side.BUY:
            return spec.round_price(bid - sl_dist), spec.round_price(bid + tp_dist)
        return spec.round_price(ask + sl_dist), spec.round_price(ask - tp_dist)

    def _partial_lots(self, trade: MasterTrade) -> float | None:
        """Lots for a partial close in tenths of a lot that leave a valid remainder, or None."""
        spec = self.broker.spec(trade.symbol)
        tenths = round(trade.lots * 10)
        if tenths < 2 or abs(tenths / 10 - trade.lots) > 1e-9:
            return None
        lots = self.rng.randint(1, tenths - 1) / 10
        remainder = (tenths - round(lots * 10)) / 10
        if not (spec.lots_valid(lots) and spec.lots_valid(remainder)):
            return None
        return lots
