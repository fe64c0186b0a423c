"""The copy rules (echo.domain.copying): canonical symbols, the per-slave index of symbol specs, the open
plan (one decision per slave) and the mapping of a master's partial close onto a slave ticket. Table tests
plus hypothesis properties over lot steps 0.01 / 0.05 / 0.1."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.domain.copying import (
    Copy,
    Omit,
    PartialPlan,
    SlaveView,
    canonical_symbol,
    plan_open,
    plan_partial_close,
    symbols_by_canonical,
)
from echo.domain.ids import uuid7
from echo.domain.messages import TradeIntent
from echo.domain.policy import Policy
from echo.domain.types import Side, SymbolSpec

TRADE_ID = uuid7(1764063000000, bytes(range(10)))
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TOL = 1e-9


def spec(
    broker: str = "EURUSD",
    canonical: str | None = None,
    *,
    digits: int = 5,
    min_lot: float = 0.01,
    max_lot: float = 100.0,
    lot_step: float = 0.01,
) -> SymbolSpec:
    point = float(Decimal(1).scaleb(-digits))
    return SymbolSpec(
        broker_symbol=broker,
        canonical_symbol=canonical or broker,
        digits=digits,
        point=point,
        tick_size=point,
        min_lot=min_lot,
        max_lot=max_lot,
        lot_step=lot_step,
        stop_level=0,
    )


def intent(
    symbol: str = "EURUSD",
    stop_loss: float | None = None,
    take_profit: float | None = None,
    price: float = 1.08512,
) -> TradeIntent:
    return TradeIntent(
        trade_id=TRADE_ID,
        trace_id=TRACE_ID,
        symbol=symbol,
        side=Side.BUY,
        lot_size=1.0,
        price=price,
        magic_number=0,
        ticket=1001,
        stop_loss=stop_loss,
        take_profit=take_profit,
    )


def slave(account: str, s: SymbolSpec, online: bool = True) -> SlaveView:
    """A slave that trades EURUSD under the broker symbol of ``s``."""
    return SlaveView(account, online, {"EURUSD": s})


def one(plan: list[Copy | Omit]) -> Copy | Omit:
    assert len(plan) == 1
    return plan[0]


# ---------------------------------------------------------------------------------------- canonical_symbol


@pytest.mark.parametrize(
    ("master_symbol", "mappings", "expected"),
    [
        ("EURUSD", {}, "EURUSD"),
        ("XAUUSD.m", {}, "XAUUSD"),
        ("EURUSDpro", {}, "EURUSD"),
        ("#US100_cash", {}, "US100"),
        ("eurusd", {}, "EURUSD"),
        ("GOLD", {}, "GOLD"),
        ("GOLD", {"GOLD": "XAUUSD"}, "XAUUSD"),  # the explicit mapping wins
        ("GOLD.m", {"GOLD.m": "xauusd.x"}, "XAUUSD"),  # ... and is itself normalized
        ("XAUUSD.m", {"XAUUSD.m": "GOLD"}, "GOLD"),  # even over what normalization would give
        ("GOLD", {"SILVER": "XAGUSD"}, "GOLD"),  # a mapping of another symbol is ignored
        ("GOLD.m", {"GOLD.m": ""}, "GOLD"),  # an empty mapping falls back to normalization
    ],
)
def test_canonical_symbol(master_symbol: str, mappings: dict[str, str], expected: str) -> None:
    assert canonical_symbol(master_symbol, mappings) == expected


# ------------------------------------------------------------------------------------ symbols_by_canonical


def brokers(index: dict[str, SymbolSpec]) -> dict[str, str]:
    return {k: v.broker_symbol for k, v in index.items()}


@pytest.mark.parametrize(
    ("reported", "expected_index", "expected_losers"),
    [
        ([], {}, []),
        (["EURUSD", "XAUUSD.m"], {"EURUSD": "EURUSD", "XAUUSD": "XAUUSD.m"}, []),
        # the exact canonical name wins over a decorated one, whichever comes first
        (["EURUSD.m", "EURUSD"], {"EURUSD": "EURUSD"}, ["EURUSD.m"]),
        (["EURUSD", "EURUSD.m"], {"EURUSD": "EURUSD"}, ["EURUSD.m"]),
        (["EURUSD.m", "eurusd"], {"EURUSD": "eurusd"}, ["EURUSD.m"]),
        # two decorated ones: the first keeps the slot
        (["EURUSD.m", "EURUSDpro"], {"EURUSD": "EURUSD.m"}, ["EURUSDpro"]),
        (["EURUSDpro", "EURUSD.m"], {"EURUSD": "EURUSDpro"}, ["EURUSD.m"]),
        # three: the exact one wins, every loser is reported in order
        (["EURUSD.m", "EURUSD", "EURUSDpro"], {"EURUSD": "EURUSD"}, ["EURUSD.m", "EURUSDpro"]),
        (["EURUSD.m", "EURUSDpro", "EURUSD"], {"EURUSD": "EURUSD"}, ["EURUSDpro", "EURUSD.m"]),
    ],
)
def test_symbols_by_canonical(
    reported: list[str], expected_index: dict[str, str], expected_losers: list[str]
) -> None:
    index, losers = symbols_by_canonical([spec(b) for b in reported])
    assert brokers(index) == expected_index
    assert losers == expected_losers


def test_symbols_by_canonical_uses_the_reported_canonical_normalized() -> None:
    gold = spec("GOLD", "xauusd.m")
    index, losers = symbols_by_canonical([gold, spec("EURUSD")])
    assert index == {"XAUUSD": gold, "EURUSD": index["EURUSD"]}
    assert losers == []


def test_symbols_by_canonical_exact_broker_name_beats_a_mapped_alias() -> None:
    gold = spec("GOLD", "XAUUSD")
    xau = spec("XAUUSD", "XAUUSD")
    assert symbols_by_canonical([gold, xau]) == ({"XAUUSD": xau}, ["GOLD"])
    assert symbols_by_canonical([xau, gold]) == ({"XAUUSD": xau}, ["GOLD"])


# --------------------------------------------------------------------------------------------- plan_open

NOW = 1_764_000_000_000


def decide(
    intent: TradeIntent,
    canonical: str,
    slaves: list[SlaveView],
    fixed_lot: float = 0.10,
    copy_sl_tp: bool = True,
) -> list[Copy | Omit]:
    """plan_open with every slave on a fixed-lot policy (no filters, no windows)."""
    policy = Policy(fixed_lot=fixed_lot, copy_sl_tp=copy_sl_tp)
    return plan_open(intent, canonical, [dataclasses.replace(v, policy=policy) for v in slaves], NOW, NOW)


def test_plan_open_one_decision_per_slave_in_order() -> None:
    slaves = [
        slave("51003", spec("EURUSD.m")),
        SlaveView("51001", False, {}),
        SlaveView("51002", True, {"XAUUSD": spec("XAUUSD")}),
        slave("51000", spec("EURUSDpro", lot_step=0.1, min_lot=0.1)),
    ]
    plans = decide(intent(), "EURUSD", slaves, 0.10, True)
    assert [p.account_id for p in plans] == ["51003", "51001", "51002", "51000"]
    assert [type(p) for p in plans] == [Copy, Omit, Omit, Copy]
    assert [p.broker_symbol for p in plans if isinstance(p, Copy)] == ["EURUSD.m", "EURUSDpro"]
    assert decide(intent(), "EURUSD", [], 0.10, True) == []


def test_plan_open_offline_slave_with_known_symbols_still_gets_its_copy() -> None:
    # the command is journaled and delivered when the terminal is back
    plan = one(decide(intent(), "EURUSD", [slave("51001", spec(), online=False)], 0.10, True))
    assert isinstance(plan, Copy) and plan.account_id == "51001"


def test_plan_open_slave_never_seen_is_omitted() -> None:
    plan = one(decide(intent(), "EURUSD", [SlaveView("51001", False, {})], 0.10, True))
    assert plan == Omit("51001", "slave_offline")


def test_plan_open_unmapped_symbol_is_omitted_with_the_known_symbols() -> None:
    view = SlaveView("51001", True, {"XAUUSD": spec("XAUUSD.m"), "EURUSD": spec("EURUSD.m")})
    plan = one(decide(intent("GBPUSD"), "GBPUSD", [view], 0.10, True))
    assert isinstance(plan, Omit)
    assert plan.account_id == "51001"
    assert plan.reason == "symbol_not_mapped"
    assert plan.detail == {"canonical": "GBPUSD", "known": ["EURUSD", "XAUUSD"]}


def test_plan_open_slave_with_no_symbols_is_unmapped() -> None:
    plan = one(decide(intent(), "EURUSD", [SlaveView("51001", True, {})], 0.10, True))
    assert isinstance(plan, Omit) and plan.reason == "symbol_not_mapped"
    assert plan.detail["known"] == []


@pytest.mark.parametrize(
    ("fixed_lot", "lot_step", "min_lot", "expected"),
    [
        (0.10, 0.1, 0.1, 0.10),
        (0.10, 0.01, 0.01, 0.10),
        (0.10, 0.05, 0.05, 0.10),
        (0.07, 0.05, 0.05, 0.05),  # rounded DOWN, never up
        (0.09, 0.05, 0.05, 0.05),
        (0.19, 0.1, 0.1, 0.10),
        (0.123, 0.01, 0.01, 0.12),
        (1.0, 0.01, 0.01, 1.0),
        (0.3, 0.1, 0.1, 0.3),  # 0.3 / 0.1 is 2.9999999999999996 in binary floats
        (0.7, 0.1, 0.1, 0.7),
        (2.35, 0.05, 0.1, 2.35),
    ],
)
def test_plan_open_fixed_lot_rounded_down_to_lot_step(
    fixed_lot: float, lot_step: float, min_lot: float, expected: float
) -> None:
    s = spec(lot_step=lot_step, min_lot=min_lot)
    plan = one(decide(intent(), "EURUSD", [slave("51001", s)], fixed_lot, True))
    assert isinstance(plan, Copy)
    assert plan.lot_size == expected
    assert s.lots_valid(plan.lot_size)
    assert plan.account_id == "51001" and plan.broker_symbol == "EURUSD" and plan.spec is s
    assert (
        plan.detail.items()
        >= {
            "sizing": "fixed_lot",
            "fixed_lot": fixed_lot,
            "lot_step": lot_step,
            "min_lot": min_lot,
            "max_lot": 100.0,
            "canonical": "EURUSD",
        }.items()
    )


@pytest.mark.parametrize(
    ("fixed_lot", "lot_step", "min_lot", "rounded"),
    [
        (0.03, 0.01, 0.1, 0.03),  # below min_lot on a min_lot 0.1 broker
        (0.03, 0.1, 0.1, 0.0),  # rounds to nothing
        (0.04, 0.05, 0.05, 0.0),
        (0.19, 0.1, 0.2, 0.1),
    ],
)
def test_plan_open_lot_below_min_lot_is_omitted(
    fixed_lot: float, lot_step: float, min_lot: float, rounded: float
) -> None:
    s = spec(lot_step=lot_step, min_lot=min_lot)
    plan = one(decide(intent(), "EURUSD", [slave("51001", s)], fixed_lot, True))
    assert isinstance(plan, Omit)
    assert plan.reason == "lot_below_min_lot"
    assert plan.detail["rounded"] == rounded
    assert plan.detail["fixed_lot"] == fixed_lot
    assert plan.detail["min_lot"] == min_lot
    assert plan.detail["lot_step"] == lot_step
    assert plan.detail["sizing"] == "fixed_lot"


def test_plan_open_lot_above_max_lot_is_clamped() -> None:
    s = spec(lot_step=0.01, min_lot=0.01, max_lot=2.0)
    plan = one(decide(intent(), "EURUSD", [slave("51001", s)], 5.007, True))
    assert isinstance(plan, Copy)
    assert plan.lot_size == 2.0
    assert plan.detail["clamped_from"] == 5.0
    assert plan.detail["max_lot"] == 2.0


def test_plan_open_lot_at_max_lot_is_not_clamped() -> None:
    s = spec(lot_step=0.01, min_lot=0.01, max_lot=2.0)
    plan = one(decide(intent(), "EURUSD", [slave("51001", s)], 2.0, True))
    assert isinstance(plan, Copy)
    assert plan.lot_size == 2.0
    assert "clamped_from" not in plan.detail


@pytest.mark.parametrize(
    ("digits", "sl", "tp", "expected_sl", "expected_tp"),
    [
        (5, 1.08012, 1.09012, 1.08012, 1.09012),
        (4, 1.08016, 1.09014, 1.0802, 1.0901),  # a 4-digit broker
        (3, 151.23456, 152.9999, 151.235, 153.0),  # a JPY pair
        (2, 2345.678, 2400.001, 2345.68, 2400.0),  # gold
        (5, 1.08, None, 1.08, None),
        (5, None, 1.09, None, 1.09),
        (5, None, None, None, None),
        (5, 0.0, 0.0, None, None),  # MT4's "no stop"
    ],
)
def test_plan_open_sl_tp_copied_rounded_to_the_slave_digits(
    digits: int,
    sl: float | None,
    tp: float | None,
    expected_sl: float | None,
    expected_tp: float | None,
) -> None:
    s = spec(digits=digits)
    # the master's price between its stops, so that no stop is on the wrong side of the market
    price = (sl + tp) / 2 if sl and tp else 1.085
    plan = one(decide(intent(stop_loss=sl, take_profit=tp, price=price), "EURUSD", [slave("51001", s)]))
    assert isinstance(plan, Copy)
    assert plan.stop_loss == expected_sl
    assert plan.take_profit == expected_tp


def test_plan_open_sl_tp_not_copied_when_disabled() -> None:
    plan = one(decide(intent(stop_loss=1.08, take_profit=1.09), "EURUSD", [slave("1", spec())], 0.1, False))
    assert isinstance(plan, Copy)
    assert plan.stop_loss is None and plan.take_profit is None


def test_plan_open_each_slave_uses_its_own_spec() -> None:
    a = spec("EURUSD.m", digits=5, lot_step=0.01, min_lot=0.01)
    b = spec("EURUSDpro", digits=4, lot_step=0.05, min_lot=0.05)
    c = spec("EURUSD", digits=5, lot_step=0.1, min_lot=0.2)
    plans = decide(
        intent(stop_loss=1.080155), "EURUSD", [slave("1", a), slave("2", b), slave("3", c)], 0.17, True
    )
    assert isinstance(plans[0], Copy) and (plans[0].lot_size, plans[0].stop_loss) == (0.17, 1.08016)
    assert isinstance(plans[1], Copy) and (plans[1].lot_size, plans[1].stop_loss) == (0.15, 1.0802)
    assert isinstance(plans[2], Omit) and plans[2].reason == "lot_below_min_lot"


STEPS = st.sampled_from([0.01, 0.05, 0.1])


def _lots(step: float, n: int) -> float:
    return float(Decimal(repr(step)) * n)


@settings(max_examples=300, deadline=None)
@given(
    step=STEPS,
    min_steps=st.integers(1, 10),
    max_steps=st.integers(10, 5000),
    fixed_lot=st.floats(min_value=0.001, max_value=1000.0, allow_nan=False, allow_infinity=False),
)
def test_plan_open_lot_properties(step: float, min_steps: int, max_steps: int, fixed_lot: float) -> None:
    s = spec(lot_step=step, min_lot=_lots(step, min_steps), max_lot=_lots(step, max_steps))
    plan = one(decide(intent(), "EURUSD", [slave("51001", s)], fixed_lot, True))
    rounded = s.round_lots_down(fixed_lot)
    if isinstance(plan, Omit):
        assert plan.reason == "lot_below_min_lot"
        assert rounded < s.min_lot
        return
    assert s.lots_valid(plan.lot_size)
    assert plan.lot_size <= fixed_lot + TOL  # never more than intended
    if "clamped_from" in plan.detail:
        assert plan.lot_size == s.max_lot and plan.detail["clamped_from"] == rounded > s.max_lot
    else:
        assert plan.lot_size == rounded
        assert fixed_lot - plan.lot_size < step + TOL  # at most one step lost to rounding


# ------------------------------------------------------------------------------------ plan_partial_close


@pytest.mark.parametrize(
    ("ticket_lots", "fraction", "lot_step", "min_lot", "expected"),
    [
        (0.5, 1.0, 0.01, 0.01, PartialPlan(0.5, True, "full_close")),
        (0.5, 1.5, 0.01, 0.01, PartialPlan(0.5, True, "full_close")),
        (1.0, 0.5, 0.01, 0.01, PartialPlan(0.5, False, "proportional")),
        (0.35, 0.5, 0.01, 0.01, PartialPlan(0.17, False, "proportional")),  # 0.175 rounded down
        (0.3, 0.5, 0.05, 0.05, PartialPlan(0.15, False, "proportional")),
        (0.7, 0.5, 0.05, 0.05, PartialPlan(0.35, False, "proportional")),
        (0.7, 0.5, 0.1, 0.1, PartialPlan(0.3, False, "proportional")),
        (0.1, 0.5, 0.01, 0.1, PartialPlan(0.0, False, "partial_below_min_lot")),
        (0.01, 0.5, 0.01, 0.01, PartialPlan(0.0, False, "partial_below_min_lot")),
        (0.15, 0.7, 0.01, 0.1, PartialPlan(0.15, True, "remainder_below_min_lot")),
        (0.25, 0.8, 0.05, 0.1, PartialPlan(0.25, True, "remainder_below_min_lot")),
        (0.2, 0.9, 0.1, 0.1, PartialPlan(0.1, False, "proportional")),  # 0.18 -> 0.1, 0.1 stays
        (0.3, 0.5, 0.1, 0.1, PartialPlan(0.1, False, "proportional")),
    ],
)
def test_plan_partial_close(
    ticket_lots: float, fraction: float, lot_step: float, min_lot: float, expected: PartialPlan
) -> None:
    assert plan_partial_close(ticket_lots, fraction, spec(lot_step=lot_step, min_lot=min_lot)) == expected


# A slave ticket of the same size as the master's, on the same lot step, closes exactly what the master
# closed, float noise included (0.3 * (0.1 / 0.3) is 0.09999999999999999; 0.03 - 0.02 is 0.009999...).


@pytest.mark.parametrize(
    ("master_lots", "closed", "lot_step"),
    [
        (1.0, 0.5, 0.01),
        (0.7, 0.35, 0.05),
        (0.3, 0.1, 0.1),
        (0.3, 0.2, 0.1),
        (0.06, 0.05, 0.01),
        (0.06, 0.01, 0.01),
        (0.03, 0.02, 0.01),
        (0.3, 0.2, 0.05),
    ],
)
def test_plan_partial_close_mirrors_an_equal_ticket(
    master_lots: float, closed: float, lot_step: float
) -> None:
    remaining = float(Decimal(repr(master_lots)) - Decimal(repr(closed)))
    fraction = closed / (closed + remaining)  # as TradeClose.fraction computes it
    plan = plan_partial_close(master_lots, fraction, spec(lot_step=lot_step, min_lot=lot_step))
    assert plan == PartialPlan(closed, False, "proportional")


@settings(max_examples=300, deadline=None)
@given(step=STEPS, total=st.integers(2, 3000), data=st.data())
def test_plan_partial_close_mirrors_an_equal_ticket_property(
    step: float, total: int, data: st.DataObject
) -> None:
    closed_steps = data.draw(st.integers(1, total - 1))
    master_lots, closed = _lots(step, total), _lots(step, closed_steps)
    remaining = _lots(step, total - closed_steps)
    plan = plan_partial_close(master_lots, closed / (closed + remaining), spec(lot_step=step, min_lot=step))
    assert plan == PartialPlan(closed, False, "proportional")


@settings(max_examples=500, deadline=None)
@given(
    step=STEPS,
    min_steps=st.integers(1, 10),
    extra_steps=st.integers(0, 2000),
    fraction=st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True),
)
def test_plan_partial_close_properties(
    step: float, min_steps: int, extra_steps: int, fraction: float
) -> None:
    min_lot = _lots(step, min_steps)
    ticket_lots = _lots(step, min_steps + extra_steps)
    s = spec(lot_step=step, min_lot=min_lot, max_lot=max(100.0, ticket_lots))
    assert s.lots_valid(ticket_lots)
    plan = plan_partial_close(ticket_lots, fraction, s)
    assert plan.lots == 0 or s.lots_valid(plan.lots)
    assert 0 <= plan.lots <= ticket_lots
    if plan.full:
        assert plan.lots == ticket_lots
        assert plan.reason == "remainder_below_min_lot"
    elif plan.lots == 0:
        assert plan.reason == "partial_below_min_lot"
    else:
        assert plan.reason == "proportional"
        assert plan.lots >= min_lot - TOL
        assert ticket_lots - plan.lots >= min_lot - TOL  # the broker can keep the remainder
        assert plan.lots <= ticket_lots * fraction + TOL  # rounded down, never up


@given(
    step=STEPS,
    n=st.integers(1, 2000),
    fraction=st.floats(min_value=1.0, max_value=1e6, allow_nan=False, allow_infinity=False),
)
def test_plan_partial_close_fraction_of_one_or_more_is_full(step: float, n: int, fraction: float) -> None:
    ticket_lots = _lots(step, n)
    plan = plan_partial_close(ticket_lots, fraction, spec(lot_step=step, min_lot=step, max_lot=1000.0))
    assert plan == PartialPlan(ticket_lots, True, "full_close")
