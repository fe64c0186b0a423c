"""What a master reports (open, close, modify) and the ack the Agent sends back once Core holds it."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from echo.domain.errors import ErrorCode
from echo.domain.ids import parse_event_id, parse_magic, parse_ticket
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
class TradeIntent:
    """A master opened a market position."""

    trade_id: str
    trace_id: str
    symbol: str
    side: Side
    lot_size: float
    price: float
    magic_number: int
    ticket: int
    stop_loss: float | None = None
    take_profit: float | None = None
    attempt: int = 1
    strategy_id: str = ""
    comment: str = ""
    opened_at_ms: int | None = None

    def __post_init__(self) -> None:
        check_numbers(self)
        check_trade_ids(self.trade_id, self.trace_id)
        check_symbol(self.symbol)
        check_positive("lot_size", self.lot_size)
        check_positive("price", self.price)
        parse_magic(self.magic_number)
        parse_ticket(self.ticket)
        check_price("stop_loss", self.stop_loss)
        check_price("take_profit", self.take_profit)
        check_attempt(self.attempt)


@dataclass(frozen=True, slots=True)
class TradeClose:
    """A master closed a position fully (``remaining_lots == 0``) or partially."""

    event_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    lot_size: float
    """Lots closed by this event."""
    remaining_lots: float
    """Lots still open on the master after this event (0 = full close)."""
    price: float
    magic_number: int
    new_ticket: int | None = None
    """MT4 gives the remainder of a partial close a new ticket; the master reports it here."""
    attempt: int = 1

    def __post_init__(self) -> None:
        check_numbers(self)
        check_attempt(self.attempt)
        parse_event_id(self.event_id)
        check_trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        check_symbol(self.symbol)
        check_positive("lot_size", self.lot_size)
        if not math.isfinite(self.remaining_lots) or self.remaining_lots < 0:
            raise ValueError(f"remaining_lots must be >= 0, got {self.remaining_lots}")
        check_positive("price", self.price)
        parse_magic(self.magic_number)
        if self.new_ticket is not None:
            parse_ticket(self.new_ticket)
        if self.remaining_lots > 0 and self.new_ticket is None:
            raise ValueError("a partial close (remaining_lots > 0) must carry new_ticket")

    @property
    def is_partial(self) -> bool:
        return self.remaining_lots > 0

    @property
    def fraction(self) -> float:
        """Share of the position (before this event) that this event closed."""
        return self.lot_size / (self.lot_size + self.remaining_lots)


@dataclass(frozen=True, slots=True)
class TradeModify:
    """A master changed the SL/TP of a position (null = no stop)."""

    event_id: str
    trade_id: str
    trace_id: str
    ticket: int
    symbol: str
    magic_number: int
    stop_loss: float | None = None
    take_profit: float | None = None
    attempt: int = 1

    def __post_init__(self) -> None:
        check_numbers(self)
        check_attempt(self.attempt)
        parse_event_id(self.event_id)
        check_trade_ids(self.trade_id, self.trace_id)
        parse_ticket(self.ticket)
        check_symbol(self.symbol)
        parse_magic(self.magic_number)
        check_price("stop_loss", self.stop_loss)
        check_price("take_profit", self.take_profit)


class AckStatus(enum.Enum):
    OK = "OK"
    DUPLICATE = "DUPLICATE"
    RETRY = "RETRY"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class TradeIntentAck:
    """Agent -> master: the intent (or close/modify event, by ``event_id``) is safe with Core."""

    trade_id: str
    trace_id: str
    status: AckStatus
    event_id: str | None = None
    error_code: ErrorCode = ErrorCode.NO_ERROR
    message: str = ""

    def __post_init__(self) -> None:
        check_numbers(self)
        check_trade_ids(self.trade_id, self.trace_id)
        if self.event_id is not None:
            parse_event_id(self.event_id)
