"""Copy rules as pure functions: which slave gets what for a master trade, and how a master's partial
close maps onto a slave ticket. Every outcome carries its reason so it can be logged and stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from echo.domain.messages import TradeIntent
from echo.domain.types import SymbolSpec, normalize_symbol


@dataclass(frozen=True, slots=True)
class SlaveView:
    """What Core knows about a slave account when it decides."""

    account_id: str
    online: bool
    symbols: dict[str, SymbolSpec]
    """canonical symbol -> the broker's spec, from the slave's handshake."""


@dataclass(frozen=True, slots=True)
class Copy:
    account_id: str
    broker_symbol: str
    spec: SymbolSpec
    lot_size: float
    stop_loss: float | None
    take_profit: float | None
    detail: dict[str, object] = field(default_factory=dict)


OmitReason = Literal["slave_offline", "symbol_not_mapped", "lot_below_min_lot"]


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


def plan_open(
    intent: TradeIntent, canonical: str, slaves: list[SlaveView], fixed_lot: float, copy_sl_tp: bool
) -> list[Copy | Omit]:
    """One decision per slave, in the order given."""
    plans: list[Copy | Omit] = []
    for slave in slaves:
        # A slave that is known but offline still gets its copy: the command is journaled and delivered when
        # its terminal is back. Only a slave that never said which symbols it has cannot be planned for.
        if not slave.online and not slave.symbols:
            plans.append(Omit(slave.account_id, "slave_offline"))
            continue
        spec = slave.symbols.get(canonical)
        if spec is None:
            plans.append(
                Omit(
                    slave.account_id,
                    "symbol_not_mapped",
                    {"canonical": canonical, "known": sorted(slave.symbols)},
                )
            )
            continue
        lots = spec.round_lots_down(fixed_lot)
        detail: dict[str, object] = {
            "sizing": "fixed_lot",
            "fixed_lot": fixed_lot,
            "lot_step": spec.lot_step,
            "min_lot": spec.min_lot,
            "max_lot": spec.max_lot,
            "canonical": canonical,
        }
        if lots < spec.min_lot:
            plans.append(Omit(slave.account_id, "lot_below_min_lot", {**detail, "rounded": lots}))
            continue
        if lots > spec.max_lot:
            detail["clamped_from"] = lots
            lots = spec.max_lot
        sl = spec.round_price(intent.stop_loss) if copy_sl_tp and intent.stop_loss else None
        tp = spec.round_price(intent.take_profit) if copy_sl_tp and intent.take_profit else None
        plans.append(Copy(slave.account_id, spec.broker_symbol, spec, lots, sl, tp, detail))
    return plans


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
