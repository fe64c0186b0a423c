"""Copy rules as pure functions: which slave gets what for a master trade (policies, filters, windows,
sizing, stops), and how a master's partial close maps onto a slave ticket. Every outcome carries its
reason and its inputs, so it can be logged, stored as the copy receipt and explained afterwards. The stop
rules are ``echo.domain.stops`` (re-exported here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from echo.domain.messages import TradeIntent
from echo.domain.policy import Policy
from echo.domain.stops import StopsPlan as StopsPlan
from echo.domain.stops import mirror_stops as mirror_stops
from echo.domain.stops import modified_stops as modified_stops
from echo.domain.stops import plan_stops as plan_stops
from echo.domain.stops import stops_too_close as stops_too_close
from echo.domain.types import Side, SymbolSpec, normalize_symbol


@dataclass(frozen=True, slots=True)
class SlaveQuote:
    bid: float
    ask: float
    received_ms: int
    """When Core received it (Core's clock, so its age is comparable with ``now``)."""


@dataclass(frozen=True, slots=True)
class SlaveView:
    """What Core knows about a slave account when it decides."""

    account_id: str
    online: bool
    symbols: dict[str, SymbolSpec]
    """canonical symbol -> the broker's spec, from the slave's handshake."""
    policy: Policy = field(default_factory=Policy)
    quotes: dict[str, SlaveQuote] = field(default_factory=dict)
    """broker symbol -> the latest quote."""
    tick_values: dict[str, float] = field(default_factory=dict)
    """broker symbol -> money per tick per lot, from the latest state snapshot."""
    currency: str = ""
    tick_values_at_ms: int | None = None
    """When Core received ``tick_values`` (None: never)."""
    registration: str = "ACCEPTED"
    """Core's verdict on the account's handshake: ACCEPTED, WARNING or REJECTED."""
    rejected_symbols: dict[str, str] = field(default_factory=dict)
    """canonical -> why the account may not trade it."""


@dataclass(frozen=True, slots=True)
class Copy:
    account_id: str
    broker_symbol: str
    spec: SymbolSpec
    lot_size: float
    stop_loss: float | None
    """Sent with the order (None when the broker's StopLevel forbids it at entry: see ``after_fill``)."""
    take_profit: float | None
    detail: dict[str, object] = field(default_factory=dict)
    after_fill: tuple[float | None, float | None] | None = None
    """(SL, TP) to set by a modify right after the fill, when they could not go with the order."""
    max_slippage_points: float | None = None
    max_spread_points: float | None = None


OmitReason = Literal[
    "slave_offline",
    "account_rejected",
    "symbol_rejected",
    "symbol_not_mapped",
    "no_trade_window",
    "max_delay_exceeded",
    "quote_missing",
    "spread_too_wide",
    "slippage_too_high",
    "no_stop_loss",
    "tick_value_missing",
    "lot_below_min_lot",
]


@dataclass(frozen=True, slots=True)
class Omit:
    account_id: str
    reason: OmitReason
    detail: dict[str, object] = field(default_factory=dict)


def canonical_symbol(master_symbol: str, mappings: dict[str, str]) -> str:
    """The master's explicit mapping (EA input ``SymbolMappings``) first, normalization as fallback."""
    mapped = mappings.get(master_symbol)
    return normalize_symbol(mapped if mapped else master_symbol)


def symbols_by_canonical(specs: list[SymbolSpec]) -> tuple[dict[str, SymbolSpec], list[str]]:
    """Index a slave's reported specs by canonical symbol.

    Returns the index and the broker symbols that collided with an earlier one: the first keeps the
    slot, except that an exact canonical match wins over a decorated one."""
    index: dict[str, SymbolSpec] = {}
    collisions: list[str] = []
    for spec in specs:
        canonical = normalize_symbol(spec.canonical_symbol or spec.broker_symbol)
        current = index.get(canonical)
        if current is None:
            index[canonical] = spec
        elif spec.broker_symbol.upper() == canonical and current.broker_symbol.upper() != canonical:
            collisions.append(current.broker_symbol)
            index[canonical] = spec
        else:
            collisions.append(spec.broker_symbol)
    return index, collisions


# ------------------------------------------------------------------------------------------------ sizing


@dataclass(frozen=True, slots=True)
class Sized:
    lots: float
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class NotSized:
    reason: OmitReason
    detail: dict[str, object]


def size_entry(
    policy: Policy, intent: TradeIntent, spec: SymbolSpec, tick_value: float | None
) -> Sized | NotSized:
    """Lots for one slave: by fixed money risk from the stop distance (``lots = risk / (distance in ticks x
    tick value per lot)``), a fixed lot, or a multiple of the master's lots; then rounded *down* to the
    lot step and clamped to ``max_lot``. Below ``min_lot`` the policy's ``min_lot_action`` decides:
    ``skip`` (the default) omits the entry, since a copier never risks more than the budget; ``clamp``
    opens ``min_lot`` when that is at most ``max_risk_multiple`` times the size asked for (the risk at
    ``min_lot`` over the configured risk, for risk sizing), and omits it otherwise. ``detail["sized"]``
    says how the size came out: ``lot_step`` (rounded down to the step), ``max_lot`` or ``min_lot``
    (clamped). Missing inputs omit the entry (fail-safe)."""
    detail: dict[str, object] = {
        "sizing": policy.sizing,
        "lot_step": spec.lot_step,
        "min_lot": spec.min_lot,
        "max_lot": spec.max_lot,
    }
    money_per_lot: float | None = None
    if policy.sizing == "fixed_lot":
        raw = policy.fixed_lot
        detail["fixed_lot"] = raw
    elif policy.sizing == "multiplier":
        raw = intent.lot_size * policy.lot_multiplier
        detail.update(master_lots=intent.lot_size, lot_multiplier=policy.lot_multiplier)
    else:
        risk = policy.risk_for(intent.strategy_id, intent.magic_number)
        detail["risk"] = risk
        if intent.stop_loss is None or intent.stop_loss == intent.price:
            return NotSized("no_stop_loss", {**detail, "master_stop_loss": intent.stop_loss})
        if tick_value is None or tick_value <= 0:
            return NotSized("tick_value_missing", {**detail, "tick_value": tick_value})
        assert risk is not None  # Policy validation: sizing = "risk" has a risk amount
        distance = abs(intent.price - intent.stop_loss)
        if policy.copy_sl_tp:
            distance += policy.sl_offset * spec.point  # the stop actually placed
        if distance <= 0:
            return NotSized("no_stop_loss", {**detail, "sl_distance": distance})
        ticks = distance / spec.tick_size
        money_per_lot = ticks * tick_value
        raw = risk / money_per_lot
        detail.update(
            sl_distance=round(distance, 10),
            sl_distance_ticks=round(ticks, 6),
            tick_value=tick_value,
            money_per_lot=round(money_per_lot, 6),
        )
    if policy.sizing != "fixed_lot":
        # a computed size: 0.1 * 3 is 0.30000000000000004 in floats and must not gain or lose a whole step
        raw = round(raw, 9)
    lots = spec.round_lots_down(raw)
    detail["raw_lots"] = raw
    detail["sized"] = "lot_step"
    if lots < spec.min_lot:
        multiple = spec.min_lot / raw if raw > 0 else math.inf
        below = {**detail, "rounded": lots, "min_lot_action": policy.min_lot_action}
        if policy.min_lot_action == "skip":
            return NotSized("lot_below_min_lot", below)
        below.update(
            min_lot_multiple=round(multiple, 4) if math.isfinite(multiple) else None,
            max_risk_multiple=policy.max_risk_multiple,
        )
        if money_per_lot is not None:
            below["min_lot_risk"] = round(spec.min_lot * money_per_lot, 2)
        if not multiple <= policy.max_risk_multiple + 1e-9:
            return NotSized("lot_below_min_lot", below)
        detail, lots = {**below, "sized": "min_lot", "clamped_from": lots}, spec.min_lot
    if lots > spec.max_lot:
        detail.update(sized="max_lot", clamped_from=lots)
        lots = spec.max_lot
    detail["lots"] = lots
    if money_per_lot is not None:
        detail["effective_risk"] = round(lots * money_per_lot, 2)
    return Sized(lots, detail)


# ------------------------------------------------------------------------------------------------- entry


def plan_open(
    intent: TradeIntent, canonical: str, slaves: list[SlaveView], now_ms: int, received_ms: int
) -> list[Copy | Omit]:
    """One decision per slave, in the order given. Checks, in order: known symbols, symbol, window, the
    intent's age, spread, slippage, sizing; then the stops."""
    plans: list[Copy | Omit] = []
    for slave in slaves:
        plans.append(_plan_one(intent, canonical, slave, now_ms, received_ms))
    return plans


def _plan_one(
    intent: TradeIntent, canonical: str, slave: SlaveView, now_ms: int, received_ms: int
) -> Copy | Omit:
    account, policy = slave.account_id, slave.policy
    # A slave that is known but offline still gets its copy: the command is journaled and delivered when
    # its terminal is back. Only a slave that never said which symbols it has cannot be planned for, and
    # one whose policy needs its live figures (a fresh quote, a fresh tick value) is omitted as offline.
    if slave.registration == "REJECTED":
        return Omit(account, "account_rejected", {"canonical": canonical})
    if canonical in slave.rejected_symbols:
        return Omit(
            account, "symbol_rejected", {"canonical": canonical, "why": slave.rejected_symbols[canonical]}
        )
    if not slave.online and not slave.symbols:
        return Omit(account, "slave_offline")
    spec = slave.symbols.get(canonical)
    if spec is None:
        return Omit(account, "symbol_not_mapped", {"canonical": canonical, "known": sorted(slave.symbols)})
    base: dict[str, object] = {"canonical": canonical, "broker_symbol": spec.broker_symbol}
    if slave.registration == "WARNING":
        base["handshake_status"] = "WARNING"
    window = policy.window_at(canonical, now_ms)
    if window is not None:
        return Omit(account, "no_trade_window", {**base, "window": window.describe()})
    opened = intent.opened_at_ms if intent.opened_at_ms is not None else received_ms
    age = now_ms - opened
    base["intent_age_ms"] = age
    if policy.max_delay_ms is not None and age > policy.max_delay_ms:
        return Omit(account, "max_delay_exceeded", {**base, "max_delay_ms": policy.max_delay_ms})
    quote = slave.quotes.get(spec.broker_symbol)
    if quote is not None and now_ms - quote.received_ms > policy.quote_max_age_ms:
        quote = None
    if quote is not None:
        base.update(bid=quote.bid, ask=quote.ask, quote_age_ms=now_ms - quote.received_ms)
    needs_quote = policy.max_spread is not None or policy.max_slippage is not None
    if needs_quote and quote is None:
        missing = {**base, "quote_max_age_ms": policy.quote_max_age_ms}
        if not slave.online:
            return Omit(account, "slave_offline", {**missing, "needs": "quote"})
        return Omit(account, "quote_missing", missing)
    if quote is not None:
        spread = (quote.ask - quote.bid) / spec.point
        slippage = abs((quote.ask if intent.side is Side.BUY else quote.bid) - intent.price) / spec.point
        base.update(spread_points=round(spread, 2), slippage_points=round(slippage, 2))
        if policy.max_spread is not None and spread > policy.max_spread + 1e-9:
            return Omit(account, "spread_too_wide", {**base, "max_spread": policy.max_spread})
        if policy.max_slippage is not None and slippage > policy.max_slippage + 1e-9:
            return Omit(account, "slippage_too_high", {**base, "max_slippage": policy.max_slippage})
    tick_value = slave.tick_values.get(spec.broker_symbol)
    if tick_value is not None and slave.tick_values_at_ms is not None:
        age = now_ms - slave.tick_values_at_ms
        if age > policy.tick_value_max_age_ms and policy.sizing == "risk":
            stale = {
                **base,
                "tick_value": tick_value,
                "tick_value_age_ms": age,
                "tick_value_max_age_ms": policy.tick_value_max_age_ms,
                "stale": True,
            }
            if not slave.online:
                return Omit(account, "slave_offline", {**stale, "needs": "tick_value"})
            return Omit(account, "tick_value_missing", stale)
    if tick_value is None:
        tick_value = spec.tick_value  # as the handshake reported it, until a state snapshot says
    sized = size_entry(policy, intent, spec, tick_value)
    if isinstance(sized, NotSized):
        return Omit(account, sized.reason, {**base, **sized.detail})
    stops = plan_stops(policy, intent, spec, quote.bid if quote else None, quote.ask if quote else None)
    detail = {**base, **sized.detail, "stops": stops.detail, "master_price": intent.price}
    if slave.currency:
        detail["currency"] = slave.currency
    if stops.after_fill:
        return Copy(
            account,
            spec.broker_symbol,
            spec,
            sized.lots,
            None,
            None,
            detail,
            after_fill=(stops.stop_loss, stops.take_profit),
            max_slippage_points=policy.max_slippage,
            max_spread_points=policy.max_spread,
        )
    return Copy(
        account,
        spec.broker_symbol,
        spec,
        sized.lots,
        stops.stop_loss,
        stops.take_profit,
        detail,
        max_slippage_points=policy.max_slippage,
        max_spread_points=policy.max_spread,
    )


@dataclass(frozen=True, slots=True)
class PartialPlan:
    """How much of one slave ticket to close for a master partial close."""

    lots: float
    """Lots to close (0 = close nothing)."""
    full: bool
    reason: str


def plan_partial_close(ticket_lots: float, fraction: float, spec: SymbolSpec) -> PartialPlan:
    """Proportional partial close, rounded down to lot_step.

    When the proportional part rounds below min_lot nothing is closed now (the exposure stays, and the
    master's final close closes it all); when the remainder would fall below min_lot the ticket is closed
    in full, since the broker could not keep it.
    """
    if fraction >= 1.0:
        return PartialPlan(ticket_lots, True, "full_close")
    # round(.., 9) first: 0.3 * (0.1 / 0.3) is 0.09999999999999999 in floats and must not lose a whole step
    part = spec.round_lots_down(round(ticket_lots * fraction, 9))
    if part < spec.min_lot:
        return PartialPlan(0.0, False, "partial_below_min_lot")
    remainder = float(Decimal(repr(ticket_lots)) - Decimal(repr(part)))
    if remainder < spec.min_lot:
        return PartialPlan(ticket_lots, True, "remainder_below_min_lot")
    return PartialPlan(part, False, "proportional")
