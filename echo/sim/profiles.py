"""Broker profiles: the master's broker and slave brokers that differ on purpose.

Symbol names carry each broker's decorations (``XAUUSD.m``, ``GER30.x``, ``EURUSDpro``, ``#US100_cash``,
``eurusd``); digits, tick sizes, stop levels, lot rules, contract sizes, spreads and slippage differ too, so
symbol mapping and sizing in the copier are exercised. Every broker symbol normalizes to its canonical
symbol, and a fixed 0.10 lots is valid on every profile.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from echo.domain.types import SymbolSpec, normalize_symbol
from echo.sim.broker import SimBroker
from echo.sim.market import SimMarket

QUOTE_CURRENCY: Final[dict[str, str]] = {"XAUUSD": "USD", "EURUSD": "USD", "GER30": "EUR", "US100": "USD"}
"""Quote currency of each canonical symbol (accounts are in USD)."""


@dataclass(frozen=True, slots=True)
class ProfileSymbol:
    broker_symbol: str
    digits: int
    min_lot: float
    lot_step: float
    max_lot: float
    stop_level: int
    contract_size: float
    spread_points: int
    tick_size: float | None = None
    """None: one point."""

    @property
    def canonical(self) -> str:
        return normalize_symbol(self.broker_symbol)

    @property
    def point(self) -> float:
        return float(f"1e-{self.digits}")


@dataclass(frozen=True, slots=True)
class BrokerProfile:
    name: str
    symbols: tuple[ProfileSymbol, ...]
    slippage_points: int
    ticket_base: int
    leverage: int = 100


_S = ProfileSymbol

PROFILES: Final[dict[str, BrokerProfile]] = {
    p.name: p
    for p in (
        BrokerProfile(
            "alpha",
            (
                _S("XAUUSD", 2, 0.01, 0.01, 100.0, 0, 100.0, 25),
                _S("EURUSD", 5, 0.01, 0.01, 100.0, 0, 100_000.0, 8),
                _S("GER30", 1, 0.01, 0.01, 50.0, 0, 1.0, 15),
                _S("US100", 1, 0.01, 0.01, 50.0, 0, 1.0, 20),
            ),
            slippage_points=0,
            ticket_base=10_000_000,
        ),
        BrokerProfile(
            "bravo",
            (
                _S("XAUUSD.m", 3, 0.01, 0.01, 50.0, 20, 100.0, 300),
                _S("EURUSD.m", 5, 0.01, 0.01, 50.0, 10, 100_000.0, 10),
                _S("GER30.m", 2, 0.01, 0.01, 100.0, 50, 25.0, 200),
                _S("US100.m", 2, 0.01, 0.01, 100.0, 30, 5.0, 250),
            ),
            slippage_points=2,
            ticket_base=20_000_000,
            leverage=200,
        ),
        BrokerProfile(
            "charlie",
            (
                _S("XAUUSD.x", 2, 0.1, 0.1, 20.0, 30, 100.0, 35),
                _S("EURUSD.x", 4, 0.1, 0.1, 20.0, 5, 100_000.0, 1),
                _S("GER30.x", 1, 0.1, 0.1, 50.0, 40, 5.0, 20),
                _S("US100.x", 1, 0.1, 0.1, 50.0, 20, 1.0, 18),
            ),
            slippage_points=1,
            ticket_base=30_000_000,
            leverage=50,
        ),
        BrokerProfile(
            "delta",
            (
                _S("XAUUSDpro", 2, 0.01, 0.01, 200.0, 50, 100.0, 20),
                _S("EURUSDpro", 5, 0.01, 0.01, 200.0, 0, 100_000.0, 6),
                _S("GER30pro", 1, 0.01, 0.01, 100.0, 25, 1.0, 15, tick_size=0.5),
                _S("US100pro", 2, 0.01, 0.01, 100.0, 40, 1.0, 150, tick_size=0.25),
            ),
            slippage_points=3,
            ticket_base=40_000_000,
            leverage=500,
        ),
        BrokerProfile(
            "echo",
            (
                _S("XAUUSD+", 3, 0.01, 0.01, 50.0, 15, 100.0, 250),
                _S("EURUSD+", 5, 0.01, 0.01, 50.0, 0, 100_000.0, 12),
                _S("#GER30_cash", 1, 0.1, 0.01, 50.0, 10, 25.0, 25),
                _S("#US100_cash", 2, 0.1, 0.1, 50.0, 0, 5.0, 200),
            ),
            slippage_points=0,
            ticket_base=50_000_000,
        ),
        BrokerProfile(
            "foxtrot",
            (
                _S("xauusd", 2, 0.05, 0.05, 30.0, 10, 100.0, 30),
                _S("eurusd", 5, 0.05, 0.05, 30.0, 5, 100_000.0, 9),
                _S("ger30", 1, 0.05, 0.05, 30.0, 20, 1.0, 18),
                _S("us100", 1, 0.05, 0.05, 30.0, 15, 1.0, 22),
            ),
            slippage_points=1,
            ticket_base=60_000_000,
        ),
    )
}

MASTER_PROFILE: Final = "alpha"
SLAVE_PROFILE_NAMES: Final[tuple[str, ...]] = ("bravo", "charlie", "delta", "echo", "foxtrot")
PROFILE_NAMES: Final[tuple[str, ...]] = (MASTER_PROFILE, *SLAVE_PROFILE_NAMES)


def _tick_value(sym: ProfileSymbol, tick_size: float, market: SimMarket) -> float:
    value = tick_size * sym.contract_size
    if QUOTE_CURRENCY.get(sym.canonical, "USD") == "EUR":
        value *= market.mid("EURUSD")
    return round(value, 6)


def build_broker(
    profile: BrokerProfile, name: str, market: SimMarket, rng: random.Random, *, ticket_base: int
) -> SimBroker:
    specs: list[SymbolSpec] = []
    tick_values: dict[str, float] = {}
    for sym in profile.symbols:
        tick_size = sym.tick_size if sym.tick_size is not None else sym.point
        tick_value = _tick_value(sym, tick_size, market)
        tick_values[sym.broker_symbol] = tick_value
        specs.append(
            SymbolSpec(
                broker_symbol=sym.broker_symbol,
                canonical_symbol=sym.canonical,
                digits=sym.digits,
                point=sym.point,
                tick_size=tick_size,
                min_lot=sym.min_lot,
                max_lot=sym.max_lot,
                lot_step=sym.lot_step,
                stop_level=sym.stop_level,
                contract_size=sym.contract_size,
                tick_value=tick_value,
            )
        )
    return SimBroker(
        name,
        market,
        specs,
        rng,
        spread_points={s.broker_symbol: s.spread_points for s in profile.symbols},
        slippage_points=profile.slippage_points,
        tick_values=tick_values,
        ticket_base=ticket_base,
        leverage=profile.leverage,
    )


def master_broker(market: SimMarket, rng: random.Random) -> SimBroker:
    """The master's broker (profile ``alpha``: plain symbol names, no slippage)."""
    profile = PROFILES[MASTER_PROFILE]
    return build_broker(profile, profile.name, market, rng, ticket_base=profile.ticket_base)


def slave_profile(index: int) -> BrokerProfile:
    """The profile of slave ``index``; profiles cycle through ``SLAVE_PROFILE_NAMES``."""
    return PROFILES[SLAVE_PROFILE_NAMES[index % len(SLAVE_PROFILE_NAMES)]]


def slave_broker(index: int, market: SimMarket, rng: random.Random) -> SimBroker:
    """The broker of slave ``index`` (named ``<profile>-<index>``)."""
    profile = slave_profile(index)
    return build_broker(
        profile, f"{profile.name}-{index}", market, rng, ticket_base=profile.ticket_base + 10_000 * index
    )
