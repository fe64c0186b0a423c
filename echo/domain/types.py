"""Quantities with precision and the symbol spec that owns rounding."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from functools import lru_cache


class Side(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class Role(enum.Enum):
    MASTER = "master"
    SLAVE = "slave"


class SpecError(ValueError):
    """A symbol spec or a quantity is invalid for its spec."""


_POW10 = tuple(10.0**d for d in range(11))


def _dec(x: float) -> Decimal:
    # repr() is the shortest decimal that round-trips: 0.1 gives Decimal("0.1"), not 0.1000000000000000055
    return Decimal(repr(float(x)))


@lru_cache(maxsize=4096)
def _round_down(lots: float, lot_step: float) -> float:
    # remembered: the same sizes recur (every slave of a trade, every trade of a fixed-lot policy), and
    # the decimal arithmetic costs a few microseconds each time
    step = _dec(lot_step)
    n = (_dec(lots) / step).to_integral_value(rounding=ROUND_DOWN)
    return float(n * step)


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """A broker's contract for one symbol, as the slave terminal reports it in its handshake.

    Prices are in the symbol's quote currency; ``stop_level`` is in points (MT4's MODE_STOPLEVEL).
    ``tick_value`` is money per tick per 1.0 lot in the account currency; it moves with the market and
    is refreshed from state snapshots, so it is optional here. ``contract_size`` is optional too
    (MODE_LOTSIZE; 0 means unknown and is stored as None).
    """

    broker_symbol: str
    canonical_symbol: str
    digits: int
    point: float
    tick_size: float
    min_lot: float
    max_lot: float
    lot_step: float
    stop_level: int
    contract_size: float | None = None
    tick_value: float | None = None

    def __post_init__(self) -> None:
        if not self.broker_symbol or len(self.broker_symbol) > 32:
            raise SpecError(f"broker_symbol must be 1-32 characters, got {self.broker_symbol!r}")
        if not self.canonical_symbol or len(self.canonical_symbol) > 32:
            raise SpecError(f"canonical_symbol must be 1-32 characters, got {self.canonical_symbol!r}")
        if not 0 <= self.digits <= 10:
            raise SpecError(f"{self.broker_symbol}: digits must be 0..10, got {self.digits}")
        for name in ("point", "tick_size", "min_lot", "max_lot", "lot_step"):
            v = getattr(self, name)
            if not math.isfinite(v) or v <= 0:
                raise SpecError(f"{self.broker_symbol}: {name} must be > 0, got {v}")
        if self.min_lot > self.max_lot:
            raise SpecError(f"{self.broker_symbol}: min_lot {self.min_lot} > max_lot {self.max_lot}")
        if not 0 <= self.stop_level <= 1_000_000:
            raise SpecError(
                f"{self.broker_symbol}: stop_level must be 0..1000000 points, got {self.stop_level}"
            )
        for name in ("contract_size", "tick_value"):
            v = getattr(self, name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise SpecError(f"{self.broker_symbol}: {name} must be >= 0, got {v}")

    def round_lots_down(self, lots: float) -> float:
        """Round down to a multiple of lot_step (never up: a copier must not exceed the intended size).

        Done on the decimal values the floats stand for, so 0.3 lots on a 0.1 step is 3 steps, not 2."""
        return _round_down(lots, self.lot_step)

    def clamp_lots(self, lots: float) -> float:
        """Round down to lot_step, then clamp into [min_lot, max_lot]."""
        return min(max(self.round_lots_down(lots), self.min_lot), self.max_lot)

    def lots_valid(self, lots: float) -> bool:
        if not math.isfinite(lots) or lots < self.min_lot - 1e-12 or lots > self.max_lot + 1e-12:
            return False
        steps = _dec(lots) / _dec(self.lot_step)
        return steps == steps.to_integral_value()

    def round_price(self, price: float) -> float:
        """The price on the symbol's grid of ``digits`` decimals, half to even on the decimal value the
        float stands for (2.675 -> 2.68, although ``round(2.675, 2)`` gives 2.67)."""
        scale = _POW10[self.digits]
        x = price * scale
        n = math.floor(x)
        frac = x - n
        tie = max(abs(x), 1.0) * 2.0**-46  # a few ulps: a float that stands for an exact half
        if frac > 0.5 + tie or (abs(frac - 0.5) <= tie and n % 2 == 1):
            n += 1
        return round(n / scale, self.digits)

    def points_between(self, a: float, b: float) -> float:
        return abs(a - b) / self.point


_SEPARATORS = re.compile(r"[.#_\-]")
_TRAILING_LOWER = re.compile(r"^([A-Z0-9]{3,})[a-z]+$")


def normalize_symbol(symbol: str) -> str:
    """Canonical form of a broker symbol: the broker's decorations removed, upper case.

    ``XAUUSD.m`` -> ``XAUUSD``; ``GER30.x`` -> ``GER30``; ``EURUSDpro`` -> ``EURUSD``;
    ``#US100_cash`` -> ``US100``; ``eurusd`` -> ``EURUSD``; ``EURUSD+`` -> ``EURUSD``.
    """
    s = symbol.strip().lstrip("#").rstrip("+!")
    s = _SEPARATORS.split(s, maxsplit=1)[0].rstrip("+!")
    m = _TRAILING_LOWER.match(s)
    if m:
        s = m.group(1)
    return s.upper()
