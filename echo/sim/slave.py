"""A simulated slave EA: executes the Agent's commands on its SimBroker and reports market and account state.

It behaves like the MQL4 slave EA on the wire: a handshake with its broker's symbol specs on every
(re)connection, a ``pipe_delivery_ack`` for each command before executing it, one result per command
(a repeated ``command_id`` is answered with the stored result, never executed twice), periodic
``quotes``, ``state_snapshot`` and ``heartbeat`` lines.

With ``state_path`` every result is also appended to a JSON-lines file (command_id -> the result line) and
read back at start, so a restarted terminal still answers a repeated command_id with its original result.
Without that memory, an ``execute_order`` for a trade whose trade_id is already stamped in the comment of an
open order with the same magic number is answered with that order instead of opening a second position
(``recognised``): a command whose outcome was unknown stays exactly-once across a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from echo.domain import messages as m
from echo.domain.errors import ErrorCode
from echo.domain.ids import trade_id_from_comment
from echo.domain.types import Role, Side
from echo.pipe.codec import EA_TO_AGENT, Decoded
from echo.sim import jsonl
from echo.sim.broker import BrokerError, SimBroker, SimOrder
from echo.sim.terminal import Periodic, SimTerminal, identity_beside

log = logging.getLogger(__name__)

FEATURES = ["spec_report/v1", "quotes/250ms"]


class SimSlaveEA(SimTerminal):
    """One slave terminal.

    ``on_execute_received(trade_id, account_id, perf_counter_ns)`` is called when an ``execute_order`` first
    arrives, with the time the read that brought its line returned (latency measurement: decoding it and
    the other terminals' work in this process are not counted); a repeated command (or one recognised by
    its order comment) does not call it.
    """

    _role = Role.SLAVE
    _features = tuple(FEATURES)
    _log = log

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
        state_path: str | Path | None = None,
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
            identity_path=identity_beside(state_path),
            token=token,
        )
        self.quote_interval = quote_interval
        self.snapshot_interval = snapshot_interval
        self._on_execute_received = on_execute_received

        self.executed = 0
        self.refused_by_limits = 0
        """Orders the live-price re-check kept from the broker."""
        self.closed = 0
        self.modified = 0
        self.heartbeats_received = 0
        self.recognised = 0
        """Executions answered with an open order already stamped with the trade_id."""
        self.results: dict[str, m.Result] = {}
        self.delivery_config: m.DeliveryConfig | None = None
        self.state_path = Path(state_path) if state_path is not None else None
        if self.state_path is not None:
            self._load_results(self.state_path)

    # ------------------------------------------------------------------------------------------ writing

    def _periodic(self) -> list[Periodic]:
        return [
            (self.quote_interval, self._quotes),
            (self.snapshot_interval, self._snapshot),
            *super()._periodic(),
        ]

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
        now = self._now_ms()
        if b.auto_stops:
            b.trigger_stops(now)
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
            recent_closes=[
                m.ClosedPosition(
                    o.ticket,
                    o.symbol,
                    o.lots,
                    o.close_price or 0.0,
                    o.close_time_ms or now,
                    m.CloseReason(o.close_reason),
                )
                for o in b.closed_by_broker(now - 86_400_000)
                if trade_id_from_comment(o.comment) is not None  # positions Echo opened
            ],
        )

    # ------------------------------------------------------------------------------------------ reading

    async def _on_message(self, stream: trio.abc.Stream, nursery: trio.Nursery, event: Decoded) -> bool:
        p = event.payload
        if isinstance(p, m.ExecuteOrder | m.CloseOrder | m.ModifyOrder):
            await self._command(stream, p)
        elif isinstance(p, m.DeliveryConfig):
            self.delivery_config = p
        elif isinstance(p, m.Heartbeat):
            self.heartbeats_received += 1
        else:
            return False
        return True

    async def _command(self, stream: trio.abc.Stream, cmd: m.Command) -> None:
        stored = self.results.get(cmd.command_id)
        if stored is None and isinstance(cmd, m.ExecuteOrder):
            order = self._stamped(cmd)
            if order is not None:
                stored = self._recognise(cmd, order)
                self._store(cmd.command_id, stored)
            elif self._on_execute_received is not None:
                self._on_execute_received(cmd.trade_id, self.account_id, self.received_ns)
        await self._write(stream, m.PipeDeliveryAck(cmd.command_id, cmd.trace_id, m.DeliveryStatus.OK))
        if stored is None:
            stored = self._execute(cmd)
            self._store(cmd.command_id, stored)
        await self._write(stream, stored)

    def _stamped(self, cmd: m.ExecuteOrder) -> SimOrder | None:
        """An open order of this trade: its comment carries the trade_id, its magic number the command's."""
        for order in self.broker.open_orders():
            if (
                order.magic_number == cmd.magic_number
                and trade_id_from_comment(order.comment) == cmd.trade_id
            ):
                return order
        return None

    def _recognise(self, cmd: m.ExecuteOrder, order: SimOrder) -> m.Result:
        log.info(
            "%s: %s already open as ticket %d; answering without a second fill",
            self.account_id,
            cmd.trade_id,
            order.ticket,
        )
        self.recognised += 1
        return _result(
            cmd,
            ticket=order.ticket,
            executed_price=order.open_price,
            executed_lots=order.lots,
            executed_at_ms=order.open_time_ms,
        )

    # ------------------------------------------------------------------------------------------ memory

    def _store(self, command_id: str, result: m.Result) -> None:
        self.results[command_id] = result
        if self.state_path is not None:
            jsonl.append(
                self.state_path,
                {"command_id": command_id, "line": jsonl.line_of(result, self._now_ms())},
            )

    def _load_results(self, path: Path) -> None:
        """The results a previous run of this terminal sent, from ``path``."""
        for record in jsonl.read(path):
            command_id = record.get("command_id")
            result = jsonl.payload_of(record.get("line"), EA_TO_AGENT)
            if isinstance(command_id, str) and isinstance(
                result, m.ExecutionResult | m.CloseResult | m.ModifyResult
            ):
                self.results[command_id] = result
            else:
                log.warning("%s: skipping a bad record in %s", self.account_id, path)
        if self.results:
            log.info("%s: %d stored result(s) from %s", self.account_id, len(self.results), path)

    # ------------------------------------------------------------------------------------------ executing

    def _execute(self, cmd: m.Command) -> m.Result:
        now = self._now_ms()
        try:
            if isinstance(cmd, m.ExecuteOrder):
                return self._open(cmd, now)
            if isinstance(cmd, m.CloseOrder):
                return self._close(cmd, now)
            return self._modify(cmd)
        except BrokerError as exc:
            return _result(cmd, exc)

    def _open(self, cmd: m.ExecuteOrder, now: int) -> m.Result:
        refused = self._limits_refuse(cmd)
        if refused is not None:
            return refused
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
        return _result(
            cmd,
            ticket=order.ticket,
            executed_price=order.open_price,
            executed_lots=order.lots,
            executed_at_ms=now,
        )

    def _limits_refuse(self, cmd: m.ExecuteOrder) -> m.Result | None:
        """The order's limits checked against the live price, before the broker sees it (PROTOCOL.md
        6.8): Core decided on a quote that may be a few hundred ms old."""
        if cmd.max_spread_points is None and cmd.max_slippage_points is None:
            return None
        spec = self.broker.spec(cmd.symbol)
        bid, ask = self.broker.quote(cmd.symbol)
        spread = (ask - bid) / spec.point
        code: ErrorCode | None = None
        if cmd.max_spread_points is not None and spread > cmd.max_spread_points + 1e-9:
            code, why = ErrorCode.ERR_SPREAD_TOO_WIDE, f"spread {spread:.1f} > {cmd.max_spread_points} points"
        elif cmd.max_slippage_points is not None and cmd.master_price is not None:
            price = ask if cmd.side is Side.BUY else bid
            slippage = abs(price - cmd.master_price) / spec.point
            if slippage > cmd.max_slippage_points + 1e-9:
                code = ErrorCode.ERR_SLIPPAGE_TOO_HIGH
                why = f"price {price} is {slippage:.1f} points from {cmd.master_price}"
        if code is None:
            return None
        self.refused_by_limits += 1
        return m.ExecutionResult(
            cmd.command_id, cmd.trade_id, cmd.trace_id, False, code, error_message=f"not sent: {why}"
        )

    def _close(self, cmd: m.CloseOrder, now: int) -> m.Result:
        done = self.broker.closed_fill(cmd.ticket)
        if done is not None:
            # Already closed (this terminal lost its memory of the command, or the close was decided twice):
            # the account history answers, including the remainder ticket of a partial close.
            self.recognised += 1
            fill = done
        else:
            fill = self.broker.close(cmd.ticket, cmd.lot_size, now)
            self.closed += 1
        return _result(
            cmd,
            closed_lots=fill.closed_lots,
            close_price=fill.price,
            new_ticket=fill.new_ticket,
            remaining_lots=fill.remaining_lots,
        )

    def _modify(self, cmd: m.ModifyOrder) -> m.Result:
        order = self.broker.modify(cmd.ticket, cmd.stop_loss, cmd.take_profit)
        self.modified += 1
        return _result(cmd, stop_loss=order.stop_loss, take_profit=order.take_profit)


def _result(cmd: m.Command, refused: BrokerError | None = None, **fields: Any) -> m.Result:
    """The result of ``cmd``: a success carrying ``fields`` (the result type's own), or the broker's refusal.

    A close or modify result always names the command's ticket; a successful execution names its new one.
    """
    ids = (cmd.command_id, cmd.trade_id, cmd.trace_id)
    if refused is None:
        fields.update(success=True, error_code=ErrorCode.NO_ERROR)
    else:
        fields.update(
            success=False,
            error_code=refused.code,
            mt4_error=refused.mt4_error,
            error_message=refused.message,
        )
    if isinstance(cmd, m.ExecuteOrder):
        return m.ExecutionResult(*ids, **fields)
    if isinstance(cmd, m.CloseOrder):
        return m.CloseResult(*ids, ticket=cmd.ticket, **fields)
    return m.ModifyResult(*ids, ticket=cmd.ticket, **fields)
