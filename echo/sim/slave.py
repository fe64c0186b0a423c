"""A simulated slave EA: executes the Agent's commands on its SimBroker and reports market and account state.

It behaves like the MQL4 slave EA on the wire: a handshake with its broker's symbol specs on every
(re)connection, a ``pipe_delivery_ack`` for each command before executing it, one result per command
(a repeated ``command_id`` is answered with the stored result, never executed twice), periodic
``quotes``, ``state_snapshot`` and ``heartbeat`` lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from echo.domain import messages as m
from echo.domain.errors import ErrorCode
from echo.domain.types import Role
from echo.pipe.codec import AGENT_TO_EA, Decoded, DecodeFailure, LineDecoder, encode
from echo.sim.broker import BrokerError, SimBroker

log = logging.getLogger(__name__)

FEATURES = ["spec_report/v1", "quotes/250ms"]
_DISCONNECTS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class SimSlaveEA:
    """One slave terminal.

    ``on_execute_received(trade_id, account_id, perf_counter_ns)`` is called when an ``execute_order`` first
    arrives, before anything else happens (latency measurement); a repeated command does not call it.
    """

    def __init__(
        self,
        account_id: str,
        broker: SimBroker,
        connect: Callable[[], Awaitable[trio.abc.Stream]],
        now_ms: Callable[[], int],
        *,
        quote_interval: float = 0.25,
        snapshot_interval: float = 1.0,
        heartbeat_interval: float = 2.0,
        reconnect_delay: float = 0.2,
        on_execute_received: Callable[[str, str, int], None] | None = None,
        client_semver: str = "0.1.0",
    ) -> None:
        self.account_id = account_id
        self.broker = broker
        self._connect = connect
        self._now_ms = now_ms
        self.quote_interval = quote_interval
        self.snapshot_interval = snapshot_interval
        self.heartbeat_interval = heartbeat_interval
        self.reconnect_delay = reconnect_delay
        self._on_execute_received = on_execute_received
        self.client_semver = client_semver

        self.executed = 0
        self.closed = 0
        self.modified = 0
        self.connections = 0
        self.heartbeats_received = 0
        self.errors_received: list[m.ErrorReply] = []
        self.results: dict[str, m.Result] = {}
        self.registration: m.SymbolRegistrationResult | None = None
        self.delivery_config: m.DeliveryConfig | None = None
        self._stream: trio.abc.Stream | None = None
        self._write_lock = trio.Lock()
        self._heartbeat_seq = 0

    @property
    def connected(self) -> bool:
        """True between a completed handshake write and the loss of that connection."""
        return self._stream is not None

    def handshake(self) -> m.Handshake:
        return m.Handshake(
            account_id=self.account_id,
            role=Role.SLAVE,
            protocol_version=m.PROTOCOL_VERSION,
            client_semver=self.client_semver,
            client_id=f"sim-{self.account_id}",
            broker=self.broker.name,
            capabilities=m.Capabilities(features=list(FEATURES)),
            symbols=list(self.broker.specs.values()),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, handshake and serve until cancelled; reconnect after ``reconnect_delay`` on any drop."""
        started = False
        while True:
            stream: trio.abc.Stream | None = None
            try:
                stream = await self._connect()
                self.connections += 1
                await self._write(stream, self.handshake())
                self._stream = stream
                if not started:
                    started = True
                    task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._every, stream, self.quote_interval, self._quotes)
                    nursery.start_soon(self._every, stream, self.snapshot_interval, self._snapshot)
                    nursery.start_soon(self._every, stream, self.heartbeat_interval, self._heartbeat)
                    await self._read(stream)
                    nursery.cancel_scope.cancel()
            except* _DISCONNECTS as group:
                log.info("%s: connection lost: %r", self.account_id, group.exceptions)
            finally:
                self._stream = None
                if stream is not None:
                    await trio.aclose_forcefully(stream)
            await trio.sleep(self.reconnect_delay)

    # ------------------------------------------------------------------------------------------ writing

    async def _write(self, stream: trio.abc.Stream, payload: object) -> None:
        async with self._write_lock:
            await stream.send_all(encode(payload, self._now_ms()))

    async def _every(
        self, stream: trio.abc.Stream, interval: float, make: Callable[[], object | None]
    ) -> None:
        while True:
            await trio.sleep(interval)
            payload = make()
            if payload is not None:
                await self._write(stream, payload)

    def _quotes(self) -> m.Quotes | None:
        now = self._now_ms()
        quotes: list[m.Quote] = []
        for symbol in self.broker.specs:
            try:
                bid, ask = self.broker.quote(symbol)
            except BrokerError:
                continue
            quotes.append(m.Quote(symbol, bid, ask, now))
        return m.Quotes(quotes) if quotes else None

    def _snapshot(self) -> m.StateSnapshot:
        b = self.broker
        positions = [
            m.Position(
                ticket=o.ticket,
                symbol=o.symbol,
                side=o.side,
                lots=o.lots,
                open_price=o.open_price,
                magic_number=o.magic_number,
                comment=o.comment,
                stop_loss=o.stop_loss,
                take_profit=o.take_profit,
                open_time_ms=o.open_time_ms,
                profit=b.floating_profit(o),
            )
            for o in b.open_orders()
        ]
        equity = b.equity()
        margin = b.margin()
        return m.StateSnapshot(
            balance=b.balance,
            equity=equity,
            margin=margin,
            free_margin=round(equity - margin, 2),
            currency=b.currency,
            leverage=b.leverage,
            positions=positions,
            tick_values=[m.TickValue(s, b.tick_value(s)) for s in b.specs],
        )

    def _heartbeat(self) -> m.Heartbeat:
        self._heartbeat_seq += 1
        return m.Heartbeat(self._heartbeat_seq)

    # ------------------------------------------------------------------------------------------ reading

    async def _read(self, stream: trio.abc.Stream) -> None:
        """Handle the Agent's lines until EOF."""
        decoder = LineDecoder(AGENT_TO_EA)
        while True:
            data = await stream.receive_some()
            if not data:
                return
            for event in decoder.feed(bytes(data)):
                if isinstance(event, DecodeFailure):
                    log.warning("%s: undecodable line from agent: %s", self.account_id, event.message)
                    self.errors_received.append(m.ErrorReply(event.code.value, event.message, event.ref_type))
                    continue
                await self._handle(stream, event)

    async def _handle(self, stream: trio.abc.Stream, event: Decoded) -> None:
        p = event.payload
        if isinstance(p, m.ExecuteOrder | m.CloseOrder | m.ModifyOrder):
            await self._command(stream, p)
        elif isinstance(p, m.ErrorReply):
            log.warning("%s: agent error %s: %s", self.account_id, p.code, p.message)
            self.errors_received.append(p)
        elif isinstance(p, m.SymbolRegistrationResult):
            self.registration = p
        elif isinstance(p, m.DeliveryConfig):
            self.delivery_config = p
        elif isinstance(p, m.Heartbeat):
            self.heartbeats_received += 1
        else:
            log.debug("%s: ignoring %s", self.account_id, event.type)

    async def _command(self, stream: trio.abc.Stream, cmd: m.Command) -> None:
        stored = self.results.get(cmd.command_id)
        if stored is None and isinstance(cmd, m.ExecuteOrder) and self._on_execute_received is not None:
            self._on_execute_received(cmd.trade_id, self.account_id, time.perf_counter_ns())
        await self._write(stream, m.PipeDeliveryAck(cmd.command_id, cmd.trace_id, m.DeliveryStatus.OK))
        if stored is None:
            stored = self._execute(cmd)
            self.results[cmd.command_id] = stored
        await self._write(stream, stored)

    def _execute(self, cmd: m.Command) -> m.Result:
        now = self._now_ms()
        try:
            if isinstance(cmd, m.ExecuteOrder):
                return self._open(cmd, now)
            if isinstance(cmd, m.CloseOrder):
                return self._close(cmd, now)
            return self._modify(cmd)
        except BrokerError as exc:
            return _failure(cmd, exc)

    def _open(self, cmd: m.ExecuteOrder, now: int) -> m.ExecutionResult:
        order = self.broker.market_order(
            cmd.symbol,
            cmd.side,
            cmd.lot_size,
            cmd.stop_loss,
            cmd.take_profit,
            cmd.magic_number,
            cmd.comment,
            now,
        )
        self.executed += 1
        return m.ExecutionResult(
            cmd.command_id,
            cmd.trade_id,
            cmd.trace_id,
            success=True,
            error_code=ErrorCode.NO_ERROR,
            ticket=order.ticket,
            executed_price=order.open_price,
            executed_lots=order.lots,
            executed_at_ms=now,
        )

    def _close(self, cmd: m.CloseOrder, now: int) -> m.CloseResult:
        fill = self.broker.close(cmd.ticket, cmd.lot_size, now)
        self.closed += 1
        return m.CloseResult(
            cmd.command_id,
            cmd.trade_id,
            cmd.trace_id,
            success=True,
            error_code=ErrorCode.NO_ERROR,
            ticket=cmd.ticket,
            closed_lots=fill.closed_lots,
            close_price=fill.price,
            new_ticket=fill.new_ticket,
            remaining_lots=fill.remaining_lots,
        )

    def _modify(self, cmd: m.ModifyOrder) -> m.ModifyResult:
        order = self.broker.modify(cmd.ticket, cmd.stop_loss, cmd.take_profit)
        self.modified += 1
        return m.ModifyResult(
            cmd.command_id,
            cmd.trade_id,
            cmd.trace_id,
            success=True,
            error_code=ErrorCode.NO_ERROR,
            ticket=cmd.ticket,
            stop_loss=order.stop_loss,
            take_profit=order.take_profit,
        )


def _failure(cmd: m.Command, exc: BrokerError) -> m.Result:
    """The failed result of a command the broker refused."""
    ids = (cmd.command_id, cmd.trade_id, cmd.trace_id)
    if isinstance(cmd, m.ExecuteOrder):
        return m.ExecutionResult(
            *ids, success=False, error_code=exc.code, mt4_error=exc.mt4_error, error_message=exc.message
        )
    if isinstance(cmd, m.CloseOrder):
        return m.CloseResult(
            *ids,
            success=False,
            error_code=exc.code,
            ticket=cmd.ticket,
            mt4_error=exc.mt4_error,
            error_message=exc.message,
        )
    return m.ModifyResult(
        *ids,
        success=False,
        error_code=exc.code,
        ticket=cmd.ticket,
        mt4_error=exc.mt4_error,
        error_message=exc.message,
    )
