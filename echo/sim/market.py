"""One shared market: a mid price per canonical symbol, moved by a random walk.

Every simulated broker quotes around these mids (with its own spread and rounding), so the master and all
slaves see a consistent market.
"""

from __future__ import annotations

import math
import random
from typing import Final

import trio

DEFAULT_PRICES: Final[dict[str, float]] = {
    "XAUUSD": 2350.00,
    "EURUSD": 1.0850,
    "GBPUSD": 1.2700,
    "GER30": 18500.0,
    "US100": 19500.0,
}

VOLATILITY: Final[dict[str, float]] = {
    "XAUUSD": 1.5e-4,
    "EURUSD": 0.8e-4,
    "GBPUSD": 1.0e-4,
    "GER30": 1.2e-4,
    "US100": 1.5e-4,
}
"""Relative standard deviation of a mid per square root of a second."""

DEFAULT_VOLATILITY: Final = 1.0e-4


class SimMarket:
    """Mid prices of canonical symbols. ``base_prices`` overrides or extends ``DEFAULT_PRICES``."""

    def __init__(self, rng: random.Random, base_prices: dict[str, float] | None = None) -> None:
        self._rng = rng
        self._mids: dict[str, float] = {**DEFAULT_PRICES, **(base_prices or {})}
        for symbol, price in self._mids.items():
            if not math.isfinite(price) or price <= 0:
                raise ValueError(f"{symbol}: base price must be > 0, got {price}")
        self._vol = {s: VOLATILITY.get(s, DEFAULT_VOLATILITY) for s in self._mids}

    @property
    def symbols(self) -> list[str]:
        return list(self._mids)

    def mid(self, canonical: str) -> float:
        """The current mid of a canonical symbol; ``KeyError`` when the market does not trade it."""
        return self._mids[canonical]

    def set_mid(self, canonical: str, price: float) -> None:
        """Move a mid to an exact price (tests and scenarios)."""
        if canonical not in self._mids:
            raise KeyError(canonical)
        if not math.isfinite(price) or price <= 0:
            raise ValueError(f"{canonical}: price must be > 0, got {price}")
        self._mids[canonical] = price

    def step(self, dt_s: float) -> None:
        """Advance every mid by ``dt_s`` seconds of a driftless geometric random walk."""
        if dt_s <= 0:
            return
        root = math.sqrt(dt_s)
        for symbol, price in self._mids.items():
            self._mids[symbol] = price * math.exp(self._vol[symbol] * root * self._rng.gauss(0.0, 1.0))

    async def run(self, interval: float = 0.25) -> None:
        """Step the market every ``interval`` seconds of trio time, until cancelled."""
        while True:
            await trio.sleep(interval)
            self.step(interval)
