"""What a terminal reports about its account: quotes, positions, snapshots, broker closes, heartbeats."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from echo.domain.ids import parse_ticket
from echo.domain.messages._checks import check_numbers, check_positive, check_symbol
from echo.domain.types import Side


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    bid: float
    ask: float
    time_ms: int

    def __post_init__(self) -> None:
        check_numbers(self)
        check_symbol(self.symbol)
        check_positive("bid", self.bid)
        check_positive("ask", self.ask)
        if self.ask < self.bid:
            raise ValueError(f"{self.symbol}: ask {self.ask} below bid {self.bid}")


@dataclass(frozen=True, slots=True)
class Quotes:
    quotes: list[Quote]

    def __post_init__(self) -> None:
        check_numbers(self)


@dataclass(frozen=True, slots=True)
class Position:
    ticket: int
    symbol: str
    side: Side
    lots: float
    open_price: float
    magic_number: int
    comment: str = ""
    stop_loss: float | None = None
    take_profit: float | None = None
    open_time_ms: int | None = None
    profit: float = 0.0

    def __post_init__(self) -> None:
        check_numbers(self)


@dataclass(frozen=True, slots=True)
class TickValue:
    symbol: str
    tick_value: float

    def __post_init__(self) -> None:
        check_numbers(self)


class CloseReason(enum.Enum):
    """Why the broker closed a position that no Echo command closed."""

    SL = "SL"
    TP = "TP"
    STOP_OUT = "STOP_OUT"
    OTHER = "OTHER"
    """Closed by hand or by another EA."""


@dataclass(frozen=True, slots=True)
class ClosedPosition:
    """A position of this EA's magic number that was closed without an Echo command (from the account
    history: MT4 marks SL/TP closes with ``[sl]`` / ``[tp]`` and stop-outs with ``so:`` in the comment)."""

    ticket: int
    symbol: str
    lots: float
    close_price: float
    closed_at_ms: int
    reason: CloseReason

    def __post_init__(self) -> None:
        check_numbers(self)
        parse_ticket(self.ticket)


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    balance: float
    equity: float
    margin: float
    free_margin: float
    currency: str
    leverage: int
    positions: list[Position] = field(default_factory=list)
    tick_values: list[TickValue] = field(default_factory=list)
    recent_closes: list[ClosedPosition] = field(default_factory=list)
    """Positions the broker closed in the last 24 hours without an Echo command (at most 50, newest
    first); repeated in every snapshot, so a lost line loses nothing."""

    def __post_init__(self) -> None:
        check_numbers(self)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    seq: int = 0

    def __post_init__(self) -> None:
        check_numbers(self)
