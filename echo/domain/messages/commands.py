"""The commands Core sends a slave: open, close and modify an order."""

from __future__ import annotations

from dataclasses import dataclass

from echo.domain.ids import parse_command_id, parse_magic, parse_ticket
from echo.domain.messages._checks import (
    check_attempt,
    check_numbers,
    check_positive,
    check_price,
    check_symbol,
    check_trade_ids,
)
from echo.domain.types import Side


@dataclass(frozen=True, slots=True)
class ExecuteOrder:
    """Open a market position on one slave account. ``symbol`` is the slave broker's symbol."""

    command_id: str
    trade_id: str
    trace_id: str
    symbol: str
    side: Side
    lot_size: float
    magic_number: int
    comment: str
    stop_loss: float | None = None
    take_profit: float | None = None
    master_price: float | None = None
    max_slippage_points: float | None = None
    max_spread_points: float | None = None
    attempt: int = 1

    def __post_init__(self) -> None:
        check_numbers(self)
        check_attempt(self.attempt)
        parse_command_id(self.command_id)
        check_trade_ids(self.trade_id, self.trace_id)
        check_symbol(self.symbol)
        check_positive("lot_size", self.lot_size)
        parse_magic(self.magic_number)
        if len(self.comment) > 31:
            raise ValueError("comment must fit MT4's 31 characters")
        check_price("stop_loss", self.stop_loss)
        check_price("take_profit", self.take_profit)


@dataclass(frozen=True, slots=True)
class CloseOrder:
    """Close ``lot_size`` lots of the exact slave ``ticket`` (all of it for a full close)."""

    command_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    lot_size: float
    magic_number: int
    attempt: int = 1

    def __post_init__(self) -> None:
        check_numbers(self)
        check_attempt(self.attempt)
        parse_command_id(self.command_id)
        check_trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        check_symbol(self.symbol)
        check_positive("lot_size", self.lot_size)
        parse_magic(self.magic_number)


@dataclass(frozen=True, slots=True)
class ModifyOrder:
    command_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    stop_loss: float | None = None
    take_profit: float | None = None
    attempt: int = 1

    def __post_init__(self) -> None:
        check_numbers(self)
        check_attempt(self.attempt)
        parse_command_id(self.command_id)
        check_trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        check_symbol(self.symbol)
        check_price("stop_loss", self.stop_loss)
        check_price("take_profit", self.take_profit)


Command = ExecuteOrder | CloseOrder | ModifyOrder
