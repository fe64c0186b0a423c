"""``echo-copier explain TRADE_ID``: the copy receipt of one master trade, from the store.

For every slave account: copied or omitted and why, how the size was chosen (inputs and result), the
stops intended and placed, prices, and the time each hop took (master open -> Core -> slave fill). A
table for people, ``--json`` for tools."""

from __future__ import annotations

from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

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


def _why(entry: dict[str, Any]) -> str:
    d = entry["detail"]
    if entry["decision"] == "omit":
        limits = {
            "spread_too_wide": f"spread {d.get('spread_points')} > {d.get('max_spread')} pts",
            "slippage_too_high": f"slippage {d.get('slippage_points')} > {d.get('max_slippage')} pts",
            "max_delay_exceeded": f"age {d.get('intent_age_ms')} ms > {d.get('max_delay_ms')} ms",
            "no_trade_window": str(d.get("window", "")),
            "lot_below_min_lot": f"{d.get('raw_lots', d.get('fixed_lot'))} lots < min {d.get('min_lot')}",
            "symbol_not_mapped": f"{d.get('canonical')} not among {d.get('known')}",
        }
        return limits.get(entry["reason"], "")
    sizing = d.get("sizing", "")
    if sizing == "risk":
        return (
            f"risk {d.get('risk')} / ({d.get('sl_distance_ticks')} ticks x {d.get('tick_value')}) "
            f"= {d.get('raw_lots')} -> {entry['lots']} lots, effective risk {d.get('effective_risk')}"
        )
    if sizing == "multiplier":
        return f"{d.get('master_lots')} x {d.get('lot_multiplier')} -> {entry['lots']} lots"
    return f"fixed {d.get('fixed_lot')} -> {entry['lots']} lots"


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
            _why(s),
            sl_tp,
            str(fill or ""),
            "" if latency is None else str(latency),
        )
    console.print(table)
    console.print(f"copied {r['copied']}, omitted {r['omitted']}")
