"""``explain``'s "why": every omission the copy rules make (``echo.domain.copying.plan_open``) is put in
words with the numbers of its receipt, and a copy says how its size came out."""

from __future__ import annotations

import dataclasses
from typing import Any, get_args

import pytest

from echo.app.explain import OMIT_WHY, why_of
from echo.domain.copying import Copy, Omit, OmitReason, SlaveQuote, SlaveView, plan_open
from echo.domain.ids import uuid7
from echo.domain.messages import TradeIntent
from echo.domain.policy import Policy, Window
from echo.domain.types import Side, SymbolSpec

NOW = 1_764_000_000_000  # 2025-11-24T16:00:00Z
GOLD = SymbolSpec("XAUUSD.m", "XAUUSD", 2, 0.01, 0.01, 0.01, 50.0, 0.01, 30, 100.0, 1.0)


def intent(sl: float | None = 2390.0, opened_at_ms: int | None = None) -> TradeIntent:
    return TradeIntent(
        uuid7(NOW, bytes(10)),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "XAUUSD",
        Side.BUY,
        1.0,
        2400.0,
        7,
        1,
        sl,
        None,
        opened_at_ms=opened_at_ms,
    )


def view(policy: Policy, **kw: Any) -> SlaveView:
    base = SlaveView(
        "51001",
        True,
        {"XAUUSD": GOLD},
        policy,
        {"XAUUSD.m": SlaveQuote(2400.0, 2400.3, NOW)},
        {"XAUUSD.m": 1.0},
        tick_values_at_ms=NOW,
    )
    return dataclasses.replace(base, **kw)


def why(slave: SlaveView, trade: TradeIntent | None = None) -> tuple[str, str]:
    (plan,) = plan_open(trade or intent(), "XAUUSD", [slave], NOW, NOW)
    entry: dict[str, Any]
    if isinstance(plan, Omit):
        entry = {"decision": "omit", "reason": plan.reason, "lots": None, "detail": plan.detail}
    else:
        assert isinstance(plan, Copy)
        entry = {"decision": "copy", "reason": "copied", "lots": plan.lot_size, "detail": plan.detail}
    return entry["reason"], why_of(entry)


RISK = Policy(sizing="risk", risk_fixed=100.0)
CASES: list[tuple[str, SlaveView, TradeIntent | None, list[str]]] = [
    (
        "slave_offline",
        view(Policy(max_spread=50), online=False, quotes={}),
        None,
        ["offline", "XAUUSD.m", "5000 ms"],
    ),
    (
        "slave_offline",
        view(RISK, online=False, tick_values_at_ms=NOW - 70_000),
        None,
        ["offline", "70000 ms", "60000 ms"],
    ),
    ("slave_offline", SlaveView("51001", False, {}), None, ["offline", "no handshake"]),
    ("account_rejected", view(Policy(), registration="REJECTED"), None, ["REJECTED"]),
    (
        "symbol_rejected",
        view(Policy(), rejected_symbols={"XAUUSD": "not in the catalog"}),
        None,
        ["XAUUSD", "not in the catalog"],
    ),
    ("symbol_not_mapped", view(Policy(), symbols={"EURUSD": GOLD}), None, ["XAUUSD", "EURUSD"]),
    (
        "no_trade_window",
        view(Policy(windows=(Window("*", "2025-11-24T15:00:00Z", "2025-11-24T17:00:00Z"),))),
        None,
        ["2025-11-24T15:00:00Z..2025-11-24T17:00:00Z"],
    ),
    (
        "max_delay_exceeded",
        view(Policy(max_delay_ms=3000)),
        intent(opened_at_ms=NOW - 4000),
        ["4000", "3000"],
    ),
    ("quote_missing", view(Policy(max_spread=50), quotes={}), None, ["XAUUSD.m", "5000 ms"]),
    ("spread_too_wide", view(Policy(max_spread=20)), None, ["30.0", "20"]),
    ("slippage_too_high", view(Policy(max_slippage=10)), None, ["30.0", "10"]),
    ("no_stop_loss", view(RISK), intent(sl=None), ["stop loss", "None"]),
    ("tick_value_missing", view(RISK, tick_values_at_ms=NOW - 70_000), None, ["70000 ms", "60000 ms"]),
    (
        "tick_value_missing",
        view(RISK, tick_values={}, symbols={"XAUUSD": dataclasses.replace(GOLD, tick_value=None)}),
        None,
        ["no tick value", "XAUUSD.m"],
    ),
    ("lot_below_min_lot", view(Policy(sizing="risk", risk_fixed=7.0)), None, ["0.007", "0.01", "skip"]),
    (
        "lot_below_min_lot",
        view(Policy(sizing="risk", risk_fixed=4.0, min_lot_action="clamp")),
        None,
        ["0.004", "2.5x", "risk 10.0 vs 4.0", "max_risk_multiple 1.5"],
    ),
]


@pytest.mark.parametrize(("reason", "slave", "trade", "words"), CASES, ids=lambda x: str(x)[:40])
def test_every_omission_is_explained_with_its_numbers(
    reason: str, slave: SlaveView, trade: TradeIntent | None, words: list[str]
) -> None:
    got, text = why(slave, trade)
    assert got == reason
    for word in words:
        assert word in text, (word, text)


def test_the_cases_cover_every_omission_reason() -> None:
    assert {c[0] for c in CASES} == set(get_args(OmitReason)) == set(OMIT_WHY)


def test_a_copy_says_how_it_was_sized() -> None:
    _, risk = why(view(RISK))
    assert risk == "risk 100.0 / (1000.0 ticks x 1.0) = 0.1 -> 0.1 lots, effective risk 100.0"
    _, clamped = why(view(Policy(sizing="risk", risk_fixed=7.0, min_lot_action="clamp")))
    assert "-> 0.01 lots" in clamped
    assert "raised from 0.0 to min_lot: 1.4286x the size, risk 10.0 vs 7.0, max_risk_multiple 1.5" in clamped
    _, capped = why(view(Policy(fixed_lot=80.0)))
    assert capped == "fixed 80.0 -> 50.0 lots (capped at max_lot from 80.0)"
