"""Stop rules as pure functions: the master's SL/TP mirrored onto a slave (offsets, price grid), the
catastrophic stop when none is copied, and the broker's StopLevel check that moves stops after the fill."""

from __future__ import annotations

from dataclasses import dataclass

from echo.domain.messages import TradeIntent
from echo.domain.policy import Policy
from echo.domain.types import Side, SymbolSpec


@dataclass(frozen=True, slots=True)
class StopsPlan:
    stop_loss: float | None
    take_profit: float | None
    after_fill: bool
    """The broker's StopLevel forbids these stops at entry: open without them, modify after the fill."""
    detail: dict[str, object]


def mirror_stops(
    policy: Policy, side: Side, spec: SymbolSpec, stop_loss: float | None, take_profit: float | None
) -> tuple[float | None, float | None]:
    """The master's SL/TP as the slave's: moved outward by the policy's offsets (points) and put on the
    slave symbol's price grid. A master modification is mirrored with the same offsets as the entry."""
    sign = 1 if side is Side.BUY else -1
    sl = stop_loss - sign * policy.sl_offset * spec.point if stop_loss is not None else None
    tp = take_profit + sign * policy.tp_offset * spec.point if take_profit is not None else None
    return (
        spec.round_price(sl) if sl is not None and sl > 0 else None,
        spec.round_price(tp) if tp is not None and tp > 0 else None,
    )


def modified_stops(
    policy: Policy,
    side: Side,
    spec: SymbolSpec,
    stop_loss: float | None,
    take_profit: float | None,
    entry: float,
) -> tuple[float | None, float | None]:
    """The slave's stops after a master modification: mirrored as at entry, and when that leaves no SL
    (the master removed its own) the policy's catastrophic SL from the slave's ``entry`` stays in place:
    the safety net never goes away because the master took its stop off."""
    sl, tp = mirror_stops(policy, side, spec, stop_loss, take_profit)
    if sl is None and policy.catastrophic_sl is not None:
        hard = entry - (1 if side is Side.BUY else -1) * policy.catastrophic_sl * spec.point
        sl = spec.round_price(hard) if hard > 0 else None
    return sl, tp


def plan_stops(
    policy: Policy, intent: TradeIntent, spec: SymbolSpec, bid: float | None, ask: float | None
) -> StopsPlan:
    """The slave's SL/TP: the master's moved outward by the offsets (points), or a catastrophic stop when
    no SL is copied; then checked against StopLevel from the price the slave would close at (bid for a
    buy, ask for a sell; the master's price when the slave has no quote)."""
    buy = intent.side is Side.BUY
    sl: float | None = None
    tp: float | None = None
    if policy.copy_sl_tp:
        sl, tp = mirror_stops(policy, intent.side, spec, intent.stop_loss, intent.take_profit)
    entry = (ask if buy else bid) or intent.price
    catastrophic = False
    if sl is None and policy.catastrophic_sl is not None:
        hard = entry - (1 if buy else -1) * policy.catastrophic_sl * spec.point
        sl = spec.round_price(hard) if hard > 0 else None
        catastrophic = sl is not None
    detail: dict[str, object] = {
        "master_stop_loss": intent.stop_loss,
        "master_take_profit": intent.take_profit,
        "sl_offset": policy.sl_offset,
        "tp_offset": policy.tp_offset,
        "stop_loss": sl,
        "take_profit": tp,
    }
    if catastrophic:
        detail["catastrophic_sl_points"] = policy.catastrophic_sl
    known = bid if buy else ask
    close_side = known or intent.price
    # Without the slave's own price, the master's stands in; the two brokers' prices and the spread
    # differ, so twice the StopLevel is asked for before trusting a stop at entry.
    margin = 1 if known else 2
    too_close = stops_too_close(spec, intent.side, close_side, sl, tp, margin)
    if too_close:
        detail.update(
            stop_level=spec.stop_level,
            reference_price=close_side,
            reference="slave quote" if known else "master price",
            too_close=too_close,
        )
    return StopsPlan(sl, tp, bool(too_close), detail)


def stops_too_close(
    spec: SymbolSpec,
    side: Side,
    close_price: float,
    stop_loss: float | None,
    take_profit: float | None,
    margin: float = 1.0,
) -> list[str]:
    """Which of the stops the broker's StopLevel forbids now: each must sit on its side of the price the
    position would close at (bid for a buy, ask for a sell), at least ``stop_level`` points (times
    ``margin``) away."""
    buy = side is Side.BUY
    min_distance = spec.stop_level * spec.point * margin
    return [
        name
        for name, price, below in (("stop_loss", stop_loss, buy), ("take_profit", take_profit, not buy))
        if price is not None and not _clear_of(price, close_price, min_distance, below, spec)
    ]


def _clear_of(price: float, reference: float, min_distance: float, below: bool, spec: SymbolSpec) -> bool:
    """``price`` is on the required side of ``reference`` by at least ``min_distance`` (half a point of
    tolerance for float noise)."""
    gap = reference - price if below else price - reference
    return gap + spec.point / 2 >= max(min_distance, spec.point / 2)
