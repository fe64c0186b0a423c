"""A simulated broker (trade server): quotes, market fills, closes and modifies with MT4's rules and errors.

Prices come from the shared ``SimMarket``; each broker adds its own spread, slippage, rounding and symbol
specs. Rejections raise ``BrokerError`` with the MT4 error number the real trade server would return.
Stop-loss and take-profit levels are stored and validated but never triggered.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from echo.domain.errors import ErrorCode, from_mt4
from echo.domain.types import Side, SymbolSpec
from echo.sim.market import SimMarket

MT4_INVALID_STOPS: Final = 130
MT4_INVALID_TRADE_VOLUME: Final = 131
MT4_OFF_QUOTES: Final = 136
MT4_TOO_MANY_ORDERS: Final = 148
MT4_UNKNOWN_SYMBOL: Final = 4106
MT4_INVALID_TICKET: Final = 4108


class BrokerError(Exception):
    """The trade server refused a request; ``mt4_error`` is GetLastError(), ``code`` its normalized form."""

    def __init__(self, mt4_error: int, message: str) -> None:
        self.mt4_error = mt4_error
        self.code: ErrorCode = from_mt4(mt4_error)
        self.message = message
        super().__init__(f"MT4 error {mt4_error} ({self.code.value}): {message}")


@dataclass(slots=True)
class SimOrder:
    """An order of the terminal's trade pool (open) or history (closed: ``close_price`` set)."""

    ticket: int
    symbol: str
    side: Side
    lots: float
    open_price: float
    stop_loss: float | None
    take_profit: float | None
    magic_number: int
    comment: str
    open_time_ms: int
    close_price: float | None = None
    close_time_ms: int | None = None
    profit: float = 0.0
    close_reason: str | None = None
    """Closed by the broker itself: ``SL``, ``TP`` or ``STOP_OUT`` (None: closed by a terminal request)."""


@dataclass(frozen=True, slots=True)
class CloseFill:
    """The outcome of ``SimBroker.close``. A partial close leaves ``remaining_lots`` under ``new_ticket``."""

    ticket: int
    closed_lots: float
    price: float
    new_ticket: int | None
    remaining_lots: float
    profit: float


def _sub(a: float, b: float) -> float:
    return float(Decimal(repr(a)) - Decimal(repr(b)))


def _to_tick(spec: SymbolSpec, price: float) -> float:
    """Round a price to the symbol's tick size, then to its digits."""
    return spec.round_price(round(price / spec.tick_size) * spec.tick_size)


class SimBroker:
    def __init__(
        self,
        name: str,
        market: SimMarket,
        specs: list[SymbolSpec],
        rng: random.Random,
        *,
        spread_points: dict[str, int],
        slippage_points: int = 0,
        tick_values: dict[str, float],
        max_positions: int = 1000,
        ticket_base: int = 10_000_000,
        balance: float = 10_000.0,
        currency: str = "USD",
        leverage: int = 100,
    ) -> None:
        if slippage_points < 0:
            raise ValueError(f"slippage_points must be >= 0, got {slippage_points}")
        if ticket_base <= 0:
            raise ValueError(f"ticket_base must be > 0, got {ticket_base}")
        self.name = name
        self.market = market
        self.specs: dict[str, SymbolSpec] = {s.broker_symbol: s for s in specs}
        self.rng = rng
        self.spread_points = dict(spread_points)
        self.slippage_points = slippage_points
        self.tick_values = dict(tick_values)
        self.max_positions = max_positions
        self.balance = balance
        self.currency = currency
        self.leverage = leverage
        self.history: list[SimOrder] = []
        self._closed: dict[int, SimOrder] = {}
        self._remainders: dict[int, tuple[int, float]] = {}
        """closed ticket -> (the remainder's ticket, its lots) after a partial close."""
        self._open: dict[int, SimOrder] = {}
        self._next_ticket = ticket_base
        self.auto_stops = False
        """Whether stop-losses and take-profits trigger as the market moves (``trigger_stops``)."""

    # ------------------------------------------------------------------------------------------ market data

    def spec(self, symbol: str) -> SymbolSpec:
        try:
            return self.specs[symbol]
        except KeyError:
            raise BrokerError(MT4_UNKNOWN_SYMBOL, f"unknown symbol {symbol!r} on {self.name}") from None

    def quote(self, symbol: str) -> tuple[float, float]:
        """(bid, ask) around the market mid, ``spread_points`` apart, on the symbol's tick grid."""
        spec = self.spec(symbol)
        try:
            mid = self.market.mid(spec.canonical_symbol)
        except KeyError:
            raise BrokerError(MT4_OFF_QUOTES, f"no prices for {symbol!r} on {self.name}") from None
        spread = self.spread_points.get(symbol, 0) * spec.point
        bid = _to_tick(spec, mid - spread / 2)
        ask = max(bid, _to_tick(spec, bid + spread))
        return bid, ask

    def tick_value(self, symbol: str) -> float:
        """Money per tick per 1.0 lot in the account currency."""
        spec = self.spec(symbol)
        if symbol in self.tick_values:
            return self.tick_values[symbol]
        if spec.tick_value is not None:
            return spec.tick_value
        return spec.tick_size * (spec.contract_size or 1.0)

    # ------------------------------------------------------------------------------------------ trading

    def market_order(
        self,
        symbol: str,
        side: Side,
        lots: float,
        stop_loss: float | None,
        take_profit: float | None,
        magic: int,
        comment: str,
        now_ms: int,
    ) -> SimOrder:
        """Open a market position: BUY fills at the ask, SELL at the bid, plus slippage."""
        spec = self.spec(symbol)
        if not spec.lots_valid(lots):
            raise BrokerError(
                MT4_INVALID_TRADE_VOLUME,
                f"{symbol}: {lots} lots is not a multiple of {spec.lot_step} "
                f"in [{spec.min_lot}, {spec.max_lot}]",
            )
        if len(self._open) >= self.max_positions:
            raise BrokerError(
                MT4_TOO_MANY_ORDERS, f"{self.name}: {self.max_positions} positions already open"
            )
        bid, ask = self.quote(symbol)
        sl = self._stop_price(spec, stop_loss)
        tp = self._stop_price(spec, take_profit)
        self._check_stops(spec, side, bid, ask, sl, tp)
        slip = self._slippage(spec)
        price = _to_tick(spec, ask + slip if side is Side.BUY else bid - slip)
        if price <= 0:
            price = ask if side is Side.BUY else bid
        order = SimOrder(
            ticket=self._new_ticket(),
            symbol=symbol,
            side=side,
            lots=lots,
            open_price=price,
            stop_loss=sl,
            take_profit=tp,
            magic_number=magic,
            comment=comment,
            open_time_ms=now_ms,
        )
        self._open[order.ticket] = order
        return order

    def close(self, ticket: int, lots: float, now_ms: int) -> CloseFill:
        """Close ``lots`` of a position (all of it when ``lots`` >= its size).

        Like MT4, a partial close closes the old ticket and opens the remainder under a new ticket with the
        same symbol, side, open price, magic number and comment.
        """
        order = self._order(ticket)
        spec = self.spec(order.symbol)
        if not math.isfinite(lots) or lots <= 0:
            raise BrokerError(MT4_INVALID_TRADE_VOLUME, f"cannot close {lots} lots of #{ticket}")
        full = lots >= order.lots - 1e-9
        closed_lots = order.lots if full else lots
        remaining = 0.0 if full else _sub(order.lots, lots)
        if not full and not (spec.lots_valid(closed_lots) and spec.lots_valid(remaining)):
            raise BrokerError(
                MT4_INVALID_TRADE_VOLUME,
                f"#{ticket}: closing {lots} of {order.lots} lots leaves an invalid volume "
                f"(step {spec.lot_step}, min {spec.min_lot})",
            )
        bid, ask = self.quote(order.symbol)
        slip = self._slippage(spec)
        price = _to_tick(spec, bid - slip if order.side is Side.BUY else ask + slip)
        if price <= 0:
            price = bid if order.side is Side.BUY else ask
        profit = self._profit(order, closed_lots, price)
        new_ticket: int | None = None
        del self._open[ticket]
        if not full:
            remainder = SimOrder(
                ticket=self._new_ticket(),
                symbol=order.symbol,
                side=order.side,
                lots=remaining,
                open_price=order.open_price,
                stop_loss=order.stop_loss,
                take_profit=order.take_profit,
                magic_number=order.magic_number,
                comment=order.comment,
                open_time_ms=order.open_time_ms,
            )
            self._open[remainder.ticket] = remainder
            new_ticket = remainder.ticket
            self._remainders[ticket] = (remainder.ticket, remaining)
        order.lots = closed_lots
        order.close_price = price
        order.close_time_ms = now_ms
        order.profit = profit
        self.history.append(order)
        self._closed[ticket] = order
        self.balance = round(self.balance + profit, 2)
        return CloseFill(ticket, closed_lots, price, new_ticket, remaining, profit)

    def _close_by_broker(self, order: SimOrder, price: float, reason: str, now_ms: int) -> None:
        del self._open[order.ticket]
        order.close_price = price
        order.close_time_ms = now_ms
        order.profit = self._profit(order, order.lots, price)
        order.close_reason = reason
        self.history.append(order)
        self._closed[order.ticket] = order
        self.balance = round(self.balance + order.profit, 2)

    def trigger_stops(self, now_ms: int) -> list[SimOrder]:
        """Close, at their level, the positions whose SL or TP the current price has reached (bid for a
        buy, ask for a sell), as the trade server does."""
        hit: list[SimOrder] = []
        for order in list(self._open.values()):
            try:
                bid, ask = self.quote(order.symbol)
            except BrokerError:
                continue
            ref = bid if order.side is Side.BUY else ask
            buy = order.side is Side.BUY
            if order.stop_loss is not None and (ref <= order.stop_loss if buy else ref >= order.stop_loss):
                self._close_by_broker(order, order.stop_loss, "SL", now_ms)
                hit.append(order)
            elif order.take_profit is not None and (
                ref >= order.take_profit if buy else ref <= order.take_profit
            ):
                self._close_by_broker(order, order.take_profit, "TP", now_ms)
                hit.append(order)
        return hit

    def stop_out(self, now_ms: int) -> list[SimOrder]:
        """A margin call: every open position is closed at the market."""
        closed: list[SimOrder] = []
        for order in list(self._open.values()):
            bid, ask = self.quote(order.symbol)
            self._close_by_broker(order, bid if order.side is Side.BUY else ask, "STOP_OUT", now_ms)
            closed.append(order)
        return closed

    def closed_by_broker(self, since_ms: int, limit: int = 50) -> list[SimOrder]:
        """Positions the broker closed on its own since ``since_ms``, newest first."""
        found = [
            o
            for o in reversed(self.history)
            if o.close_reason is not None and (o.close_time_ms or 0) >= since_ms
        ]
        return found[:limit]

    def closed_fill(self, ticket: int) -> CloseFill | None:
        """How an already closed ticket was closed (as the terminal's account history shows it, where MT4
        also names the remainder of a partial close), or None if it was never closed."""
        order = self._closed.get(ticket)
        if order is None or order.close_price is None:
            return None
        new_ticket, remaining = self._remainders.get(ticket, (None, 0.0))
        return CloseFill(ticket, order.lots, order.close_price, new_ticket, remaining, order.profit)

    def modify(self, ticket: int, stop_loss: float | None, take_profit: float | None) -> SimOrder:
        """Set the SL/TP of an open position (None or 0 = no level)."""
        order = self._order(ticket)
        spec = self.spec(order.symbol)
        bid, ask = self.quote(order.symbol)
        sl = self._stop_price(spec, stop_loss)
        tp = self._stop_price(spec, take_profit)
        self._check_stops(spec, order.side, bid, ask, sl, tp)
        order.stop_loss = sl
        order.take_profit = tp
        return order

    # ------------------------------------------------------------------------------------------ account

    def open_orders(self) -> list[SimOrder]:
        return list(self._open.values())

    def order(self, ticket: int) -> SimOrder:
        """An open order by ticket (``BrokerError`` 4108 when it is not open)."""
        return self._order(ticket)

    def floating_profit(self, order: SimOrder) -> float:
        bid, ask = self.quote(order.symbol)
        return self._profit(order, order.lots, bid if order.side is Side.BUY else ask)

    def equity(self) -> float:
        return round(self.balance + sum(self.floating_profit(o) for o in self._open.values()), 2)

    def margin(self) -> float:
        total = 0.0
        for o in self._open.values():
            spec = self.specs[o.symbol]
            notional = o.open_price / spec.tick_size * self.tick_value(o.symbol) * o.lots
            total += notional / self.leverage
        return round(total, 2)

    # ------------------------------------------------------------------------------------------ internals

    def _order(self, ticket: int) -> SimOrder:
        try:
            return self._open[ticket]
        except KeyError:
            raise BrokerError(MT4_INVALID_TICKET, f"no open order #{ticket} on {self.name}") from None

    def _new_ticket(self) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        return ticket

    def _slippage(self, spec: SymbolSpec) -> float:
        """Signed slippage in price units; positive is against the trader."""
        if self.slippage_points == 0:
            return 0.0
        return self.rng.randint(-self.slippage_points, self.slippage_points) * spec.point

    def _profit(self, order: SimOrder, lots: float, price: float) -> float:
        direction = 1.0 if order.side is Side.BUY else -1.0
        ticks = (price - order.open_price) * direction / self.specs[order.symbol].tick_size
        return round(ticks * self.tick_value(order.symbol) * lots, 2)

    @staticmethod
    def _stop_price(spec: SymbolSpec, level: float | None) -> float | None:
        if level is None or level == 0:
            return None
        return _to_tick(spec, level)

    @staticmethod
    def _check_stops(
        spec: SymbolSpec, side: Side, bid: float, ask: float, sl: float | None, tp: float | None
    ) -> None:
        """MT4's rule: a level sits on its side of the closing price (bid for BUY, ask for SELL), at least
        ``stop_level`` points away."""
        ref = bid if side is Side.BUY else ask
        eps = spec.point * 1e-6
        min_dist = spec.stop_level * spec.point
        for kind, level in (("stop_loss", sl), ("take_profit", tp)):
            if level is None:
                continue
            below = (kind == "stop_loss") == (side is Side.BUY)
            dist = ref - level if below else level - ref
            if dist <= eps or dist < min_dist - eps:
                where = "below" if below else "above"
                raise BrokerError(
                    MT4_INVALID_STOPS,
                    f"{spec.broker_symbol} {side.value}: {kind} {level} must be {where} {ref} by at least "
                    f"{spec.stop_level} points",
                )
