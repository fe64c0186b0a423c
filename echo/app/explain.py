"""``echo-copier explain TRADE_ID``: the copy receipt of one master trade, from the store.

For every slave account: copied or omitted and why (``why``: every omission reason in words, with the
numbers behind it), how the size was chosen (inputs, result, and ``sized``: rounded to the lot step or
clamped to ``min_lot``/``max_lot``), the stops intended and placed, prices, and the time each hop took
(master open -> Core -> slave fill). A table for people, ``--json`` for tools."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from echo.domain.copying import OmitReason
from echo.ports.store import CommandRow, DecisionRow, Store


class UnknownTrade(Exception):
    pass


def _json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = msgspec.json.decode(text)
    return value if isinstance(value, dict) else {}


async def receipt(store: Store, trade_id: str) -> dict[str, Any]:
    """Everything the store knows about how one master trade was copied, per slave."""
    trade = await store.get_trade(trade_id)
    if trade is None:
        raise UnknownTrade(f"no trade {trade_id} in the store")
    events = await store.events(trade_id, limit=1_000_000)
    received = next((e.at_ms for e in events if e.kind == "trade_opened"), None)
    commands: dict[str, list[CommandRow]] = {}
    for c in await store.commands(trade_id):
        commands.setdefault(c.account_id, []).append(c)
    tickets = await store.tickets(trade_id)
    slaves: list[dict[str, Any]] = []
    decisions: list[DecisionRow] = await store.decisions(trade_id)
    for d in decisions:
        detail = _json(d.detail)
        entry: dict[str, Any] = {
            "account_id": d.account_id,
            "decision": d.decision,
            "reason": d.reason,
            "lots": d.lot_size,
            "decided_at_ms": d.at_ms,
            "detail": detail,
        }
        sent = commands.get(d.account_id, [])
        execute = next((c for c in sent if c.kind == "execute"), None)
        if execute is not None:
            result = _json(execute.result)
            entry["execution"] = {
                "command_id": execute.command_id,
                "status": execute.status,
                "error_code": execute.error_code,
                "ticket": result.get("ticket"),
                "executed_price": result.get("executed_price"),
                "executed_lots": result.get("executed_lots"),
                "slippage": (
                    round(result["executed_price"] - trade.price, 10)
                    if isinstance(result.get("executed_price"), int | float)
                    else None
                ),
            }
            entry["latency_ms"] = {
                "master_to_core": received - trade.opened_at_ms if received is not None else None,
                "core_decision": d.at_ms - received if received is not None else None,
                "core_to_slave_result": (
                    execute.completed_at_ms - execute.created_at_ms if execute.completed_at_ms else None
                ),
                "master_to_slave_result": (
                    execute.completed_at_ms - trade.opened_at_ms if execute.completed_at_ms else None
                ),
            }
        entry["later_commands"] = [
            {"kind": c.kind, "status": c.status, "error_code": c.error_code, "command_id": c.command_id}
            for c in sent
            if c is not execute
        ]
        entry["tickets"] = [
            {"ticket": t.ticket, "lots": t.lots, "status": t.status, "parent_ticket": t.parent_ticket}
            for t in tickets
            if t.account_id == d.account_id
        ]
        entry["why"] = why_of(entry)
        slaves.append(entry)
    return {
        "trade": {
            "trade_id": trade.trade_id,
            "trace_id": trade.trace_id,
            "master": trade.master_account,
            "symbol": trade.symbol,
            "master_symbol": trade.master_symbol,
            "side": trade.side,
            "lots": trade.lot_size,
            "price": trade.price,
            "stop_loss": trade.stop_loss,
            "take_profit": trade.take_profit,
            "status": trade.status,
            "opened_at_ms": trade.opened_at_ms,
            "closed_at_ms": trade.closed_at_ms,
        },
        "copied": sum(1 for s in slaves if s["decision"] == "copy"),
        "omitted": sum(1 for s in slaves if s["decision"] == "omit"),
        "slaves": slaves,
    }


def _offline(d: dict[str, Any]) -> str:
    if d.get("needs") == "quote":
        return (
            f"terminal offline: no quote for {d.get('broker_symbol')} within {d.get('quote_max_age_ms')} ms, "
            "which max_spread / max_slippage need"
        )
    if d.get("needs") == "tick_value":
        return (
            f"terminal offline: its tick value is {d.get('tick_value_age_ms')} ms old "
            f"(> {d.get('tick_value_max_age_ms')} ms), which risk sizing needs"
        )
    return "terminal offline, and its symbols are not known yet (no handshake)"


def _tick_value(d: dict[str, Any]) -> str:
    if d.get("stale"):
        return (
            f"tick value {d.get('tick_value')} is {d.get('tick_value_age_ms')} ms old "
            f"(> {d.get('tick_value_max_age_ms')} ms), risk sizing needs a fresh one"
        )
    return f"no tick value for {d.get('broker_symbol')} (risk sizing needs one)"


def _below_min_lot(d: dict[str, Any]) -> str:
    text = f"{d.get('raw_lots', d.get('fixed_lot'))} lots < min {d.get('min_lot')}"
    if d.get("min_lot_action") != "clamp":
        return f"{text} (min_lot_action = skip)"
    risk = f", risk {d.get('min_lot_risk')} vs {d.get('risk')}" if d.get("min_lot_risk") is not None else ""
    return (
        f"{text}; min_lot would be {d.get('min_lot_multiple')}x the size{risk}, "
        f"more than max_risk_multiple {d.get('max_risk_multiple')}"
    )


OMIT_WHY: dict[OmitReason, Callable[[dict[str, Any]], str]] = {
    "slave_offline": _offline,
    "account_rejected": lambda d: "the account's handshake was REJECTED (see its evaluation)",
    "symbol_rejected": lambda d: f"{d.get('canonical')} rejected for this account: {d.get('why')}",
    "symbol_not_mapped": lambda d: f"{d.get('canonical')} not among {d.get('known')}",
    "no_trade_window": lambda d: f"no-trade window {d.get('window')}",
    "max_delay_exceeded": lambda d: f"age {d.get('intent_age_ms')} ms > {d.get('max_delay_ms')} ms",
    "quote_missing": lambda d: (
        f"no quote for {d.get('broker_symbol')} within {d.get('quote_max_age_ms')} ms, "
        "which max_spread / max_slippage need"
    ),
    "spread_too_wide": lambda d: f"spread {d.get('spread_points')} > {d.get('max_spread')} pts",
    "slippage_too_high": lambda d: f"slippage {d.get('slippage_points')} > {d.get('max_slippage')} pts",
    "no_stop_loss": lambda d: f"risk sizing needs the master's stop loss (it is {d.get('master_stop_loss')})",
    "tick_value_missing": _tick_value,
    "lot_below_min_lot": _below_min_lot,
}
"""Every omission reason (``echo.domain.copying.OmitReason``) in words, with the receipt's numbers."""


def _sized(entry: dict[str, Any]) -> str:
    d = entry["detail"]
    if d.get("sized") == "min_lot":
        risk = (
            f", risk {d.get('min_lot_risk')} vs {d.get('risk')}" if d.get("min_lot_risk") is not None else ""
        )
        return (
            f" (raised from {d.get('clamped_from')} to min_lot: {d.get('min_lot_multiple')}x the size{risk}, "
            f"max_risk_multiple {d.get('max_risk_multiple')})"
        )
    if d.get("sized") == "max_lot" or "clamped_from" in d:
        return f" (capped at max_lot from {d.get('clamped_from')})"
    return ""


def why_of(entry: dict[str, Any]) -> str:
    """One receipt entry in words: why it was omitted, or how its size was chosen."""
    d = entry["detail"]
    if entry["decision"] == "omit":
        explain = OMIT_WHY.get(entry["reason"])
        return explain(d) if explain is not None else str(entry["reason"])
    sizing = d.get("sizing", "")
    if sizing == "risk":
        return (
            f"risk {d.get('risk')} / ({d.get('sl_distance_ticks')} ticks x {d.get('tick_value')}) "
            f"= {d.get('raw_lots')} -> {entry['lots']} lots, effective risk {d.get('effective_risk')}"
            + _sized(entry)
        )
    if sizing == "multiplier":
        return f"{d.get('master_lots')} x {d.get('lot_multiplier')} -> {entry['lots']} lots" + _sized(entry)
    return f"fixed {d.get('fixed_lot')} -> {entry['lots']} lots" + _sized(entry)


def render(r: dict[str, Any], console: Console) -> None:
    t = r["trade"]
    console.print(
        f"[bold]{t['trade_id']}[/bold]  {t['master']} {t['side']} {t['lots']} {t['master_symbol']} "
        f"({t['symbol']}) @ {t['price']}  SL {t['stop_loss']} TP {t['take_profit']}  {t['status']}"
    )
    table = Table(show_lines=False)
    for col in ("slave", "decision", "symbol", "lots", "why", "SL / TP", "fill", "ms to fill"):
        table.add_column(col)
    for s in r["slaves"]:
        d = s["detail"]
        stops = d.get("stops") or {}
        after = d.get("after_fill")
        sl_tp = f"{stops.get('stop_loss')} / {stops.get('take_profit')}" if stops else ""
        if after:
            sl_tp += " (after fill)"
        ex = s.get("execution") or {}
        fill = (
            f"#{ex.get('ticket')} @ {ex.get('executed_price')}" if ex.get("ticket") else ex.get("status", "")
        )
        latency = (s.get("latency_ms") or {}).get("master_to_slave_result")
        table.add_row(
            s["account_id"],
            s["reason"] if s["decision"] == "omit" else "copied",
            str(d.get("broker_symbol", "")),
            "" if s["lots"] is None else str(s["lots"]),
            s["why"],
            sl_tp,
            str(fill or ""),
            "" if latency is None else str(latency),
        )
    console.print(table)
    console.print(f"copied {r['copied']}, omitted {r['omitted']}")
