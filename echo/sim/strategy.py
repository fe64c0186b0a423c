"""The scripted trader of a simulated master terminal: a random strategy that opens, partially closes,
modifies and closes trades until the master is flat, and a burst of opens for load."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from echo.domain.types import Side
from echo.sim.broker import BrokerError

if TYPE_CHECKING:
    from echo.sim.master import MasterTrade, SimMasterEA

log = logging.getLogger("echo.sim.master")


async def run_script(ea: SimMasterEA, n_trades: int, *, max_open: int = 3, pace: float = 0.05) -> None:
    """A random strategy: opens ``n_trades`` trades (at most ``max_open`` at once), partially closes
    about a quarter of them, modifies about 30%, and closes every one; the master ends flat."""
    opened = 0
    while opened < n_trades or ea.open_trades():
        await trio.sleep(pace * ea.rng.uniform(0.5, 1.5))
        live = ea.open_trades()
        if opened < n_trades and len(live) < max_open and (not live or ea.rng.random() < 0.5):
            await _random_open(ea)
            opened += 1
        elif live:
            await _random_action(ea, ea.rng.choice(live))


async def burst(ea: SimMasterEA, n_trades: int) -> list[str]:
    """Open ``n_trades`` trades back to back (as fast as the connection takes them), wait until Core
    has every one, then close them all: a load spike for Core's router."""
    opened = []
    for _ in range(n_trades):
        symbol = ea.rng.choice(ea.symbols)
        lots = ea.broker.spec(symbol).clamp_lots(ea.rng.randint(1, 10) / 10)
        opened.append(await ea.open(symbol, ea.rng.choice((Side.BUY, Side.SELL)), lots))
    await ea.wait_all_acked()
    for trade_id in opened:
        await ea.close(trade_id)
    return opened


async def _random_open(ea: SimMasterEA) -> None:
    symbol = ea.rng.choice(ea.symbols)
    side = ea.rng.choice((Side.BUY, Side.SELL))
    spec = ea.broker.spec(symbol)
    lots = spec.clamp_lots(ea.rng.randint(1, 10) / 10)
    stop_loss, take_profit = random_stops(ea, symbol, side)
    trade_id = await ea.open(symbol, side, lots, stop_loss, take_profit)
    trade = ea.trades[trade_id]
    trade.plan_partial = ea.rng.random() < 0.25 and _partial_lots(ea, trade) is not None
    trade.plan_modify = ea.rng.random() < 0.3


async def _random_action(ea: SimMasterEA, trade: MasterTrade) -> None:
    plans = (["partial"] if trade.plan_partial else []) + (["modify"] if trade.plan_modify else [])
    action = ea.rng.choice(plans) if plans else "close"
    try:
        if action == "partial":
            trade.plan_partial = False
            lots = _partial_lots(ea, trade)
            if lots is not None:
                await ea.partial_close(trade.trade_id, lots)
        elif action == "modify":
            trade.plan_modify = False
            await ea.modify(trade.trade_id, *random_stops(ea, trade.symbol, trade.side))
        else:
            await ea.close(trade.trade_id)
    except BrokerError as exc:
        log.warning("%s: %s of %s refused: %s", ea.account_id, action, trade.trade_id, exc)


def random_stops(ea: SimMasterEA, symbol: str, side: Side) -> tuple[float, float]:
    """SL and TP 300-1500 points from the closing price, on the correct sides."""
    spec = ea.broker.spec(symbol)
    bid, ask = ea.broker.quote(symbol)
    sl_dist = ea.rng.randint(300, 1500) * spec.point
    tp_dist = ea.rng.randint(300, 1500) * spec.point
    if side is Side.BUY:
        return spec.round_price(bid - sl_dist), spec.round_price(bid + tp_dist)
    return spec.round_price(ask + sl_dist), spec.round_price(ask - tp_dist)


def _partial_lots(ea: SimMasterEA, trade: MasterTrade) -> float | None:
    """Lots for a partial close in tenths of a lot that leave a valid remainder, or None."""
    spec = ea.broker.spec(trade.symbol)
    tenths = round(trade.lots * 10)
    if tenths < 2 or abs(tenths / 10 - trade.lots) > 1e-9:
        return None
    lots = ea.rng.randint(1, tenths - 1) / 10
    remainder = (tenths - round(lots * 10)) / 10
    if not (spec.lots_valid(lots) and spec.lots_valid(remainder)):
        return None
    return lots
