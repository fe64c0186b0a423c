"""Trading rules: policies and windows from config, fixed-risk sizing, filters, stops against StopLevel."""

from __future__ import annotations

import contextlib
import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echo.domain.config import ConfigError, config_from_dict
from echo.domain.copying import (
    Copy,
    NotSized,
    Omit,
    Sized,
    SlaveQuote,
    SlaveView,
    modified_stops,
    plan_open,
    plan_stops,
    size_entry,
)
from echo.domain.ids import uuid7
from echo.domain.messages import TradeIntent
from echo.domain.policy import Policy, Window
from echo.domain.types import Side, SymbolSpec

NOW = 1_764_000_000_000  # 2025-11-24T16:00:00Z
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GOLD = SymbolSpec("XAUUSD.m", "XAUUSD", 2, 0.01, 0.01, 0.01, 50.0, 0.01, 30, 100.0, 1.0)
"""Gold at a broker quoting 2 digits: a tick is 0.01, worth 1.00 per lot."""


def gold_intent(
    side: Side = Side.BUY, price: float = 2400.0, sl: float | None = 2390.0, **kw: object
) -> TradeIntent:
    return TradeIntent(
        uuid7(NOW, bytes(10)),
        TRACE,
        "XAUUSD",
        side,
        1.0,
        price,
        7,
        1,
        sl,
        kw.pop("tp", None),
        **kw,  # type: ignore[arg-type]
    )


def view(policy: Policy, quote: tuple[float, float] | None = (2400.0, 2400.2), age_ms: int = 0) -> SlaveView:
    quotes = {"XAUUSD.m": SlaveQuote(quote[0], quote[1], NOW - age_ms)} if quote else {}
    return SlaveView("51001", True, {"XAUUSD": GOLD}, policy, quotes, {"XAUUSD.m": 1.0})


def decide(policy: Policy, intent: TradeIntent | None = None, **kw: object) -> Copy | Omit:
    (plan,) = plan_open(intent or gold_intent(), "XAUUSD", [view(policy, **kw)], NOW, NOW)  # type: ignore[arg-type]
    return plan


# ---------------------------------------------------------------------------------------------- sizing


@pytest.mark.parametrize(
    ("risk", "sl", "lots", "effective"),
    [
        (100.0, 2390.0, 0.10, 100.0),  # 10.00 away = 1000 ticks x 1.00 = 1000 per lot
        (100.0, 2395.0, 0.20, 100.0),
        (100.0, 2397.0, 0.33, 99.0),  # 0.3333 rounded DOWN to the step
        (450.0, 2390.0, 0.45, 450.0),
        (5.0, 2390.0, None, None),  # 0.005 lots: below min_lot, omitted (never rounded up)
        (100_000.0, 2390.0, 50.0, 50_000.0),  # clamped to max_lot: risk stays under budget
    ],
)
def test_fixed_risk_sizing(risk: float, sl: float, lots: float | None, effective: float | None) -> None:
    sized = size_entry(Policy(sizing="risk", risk_fixed=risk), gold_intent(sl=sl), GOLD, 1.0)
    if lots is None:
        assert sized.detail["rounded"] == 0.0 and getattr(sized, "reason", "") == "lot_below_min_lot"
        return
    assert getattr(sized, "lots", None) == lots
    assert sized.detail["effective_risk"] == effective


def test_risk_sizing_without_a_master_stop_or_tick_value_is_omitted() -> None:
    policy = Policy(sizing="risk", risk_fixed=100.0)
    assert decide(policy, gold_intent(sl=None)) == Omit(
        "51001", "no_stop_loss", decide(policy, gold_intent(sl=None)).detail
    )
    no_tick = dataclasses.replace(GOLD, tick_value=None)
    plan = plan_open(
        gold_intent(), "XAUUSD", [SlaveView("51001", True, {"XAUUSD": no_tick}, policy)], NOW, NOW
    )
    assert isinstance(plan[0], Omit) and plan[0].reason == "tick_value_missing"


def test_fixed_lot_and_multiplier_need_no_stop() -> None:
    assert getattr(decide(Policy(fixed_lot=0.3), gold_intent(sl=None)), "lot_size", None) == 0.3
    multiplied = decide(Policy(sizing="multiplier", lot_multiplier=0.25), gold_intent(sl=None))
    assert isinstance(multiplied, Copy) and multiplied.lot_size == 0.25


def test_risk_by_strategy_overrides_the_default_risk() -> None:
    policy = Policy(sizing="risk", risk_fixed=100.0, risk_by_strategy={"7": 200.0})
    assert size_entry(policy, gold_intent(), GOLD, 1.0).detail["risk"] == 200.0


@given(
    risk=st.floats(1, 100_000),
    distance_ticks=st.integers(1, 239_999),
    tick_value=st.floats(0.01, 100),
    step_exp=st.integers(0, 2),
)
def test_sizing_properties(risk: float, distance_ticks: int, tick_value: float, step_exp: int) -> None:
    """Never above the budget after rounding, on the lot step, within [min_lot, max_lot] or omitted."""
    step = [0.01, 0.1, 1.0][step_exp]
    spec = dataclasses.replace(GOLD, lot_step=step, min_lot=step, max_lot=step * 5000)
    intent = gold_intent(sl=round(2400.0 - distance_ticks * 0.01, 2))
    assert intent.stop_loss is not None
    sized = size_entry(Policy(sizing="risk", risk_fixed=risk), intent, spec, tick_value)
    lots = getattr(sized, "lots", None)
    if lots is None:
        assert sized.reason in ("lot_below_min_lot", "no_stop_loss")
        return
    money_per_lot = abs(intent.price - intent.stop_loss) / spec.tick_size * tick_value
    assert lots * money_per_lot <= risk * (1 + 1e-9)
    assert spec.min_lot <= lots <= spec.max_lot
    assert (Decimal(repr(lots)) / Decimal(repr(step))) % 1 == 0


# --------------------------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("policy", "quote", "age_ms", "reason"),
    [
        (Policy(max_spread=20), (2400.0, 2400.2), 0, None),  # 20 points: at the limit passes
        (Policy(max_spread=19), (2400.0, 2400.2), 0, "spread_too_wide"),
        (Policy(max_slippage=20), (2399.8, 2400.2), 0, None),  # buys at ask 2400.20: 20 points off
        (Policy(max_slippage=19), (2399.8, 2400.2), 0, "slippage_too_high"),
        (Policy(max_spread=50), None, 0, "quote_missing"),  # fail-safe: a limit without a price omits
        (Policy(max_spread=50), (2400.0, 2400.2), 5_001, "quote_missing"),  # stale quote
        (Policy(), None, 0, None),  # no limits, no quote needed
    ],
)
def test_spread_and_slippage_filters(
    policy: Policy, quote: tuple[float, float] | None, age_ms: int, reason: str | None
) -> None:
    plan = decide(policy, quote=quote, age_ms=age_ms)
    assert (plan.reason if isinstance(plan, Omit) else None) == reason


def test_max_delay_counts_from_the_masters_open() -> None:
    policy = Policy(max_delay_ms=3000)
    assert isinstance(decide(policy, gold_intent(opened_at_ms=NOW - 3000)), Copy)
    late = decide(policy, gold_intent(opened_at_ms=NOW - 3001))
    assert (
        isinstance(late, Omit)
        and late.reason == "max_delay_exceeded"
        and late.detail["intent_age_ms"] == 3001
    )


def test_copy_carries_the_limits_for_the_slave_to_recheck() -> None:
    plan = decide(Policy(max_spread=30, max_slippage=40))
    assert isinstance(plan, Copy) and (plan.max_spread_points, plan.max_slippage_points) == (30, 40)


# --------------------------------------------------------------------------------------------- windows


def test_a_news_window_with_buffers() -> None:
    w = Window(
        "xauusd", "2025-11-24T16:00:00Z", "2025-11-24T16:01:00Z", pre_buffer_sec=60, post_buffer_sec=120
    )
    assert w.symbol == "XAUUSD" and w.applies_to("XAUUSD") and not w.applies_to("EURUSD")
    assert not w.blocks(NOW - 60_001)
    assert w.blocks(NOW - 60_000)
    assert w.blocks(NOW + 60_000 + 119_999)
    assert not w.blocks(NOW + 60_000 + 120_000)


def test_a_daily_window_across_midnight() -> None:
    w = Window("*", "23:55", "00:10")
    midnight = NOW - 16 * 3_600_000  # 2025-11-24T00:00:00Z
    assert w.blocks(midnight - 5 * 60_000) and w.blocks(midnight + 9 * 60_000)
    assert not w.blocks(midnight - 5 * 60_000 - 1) and not w.blocks(midnight + 10 * 60_000)
    assert w.blocks(midnight + 86_400_000 * 30)  # every day


def test_a_window_blocks_entries_with_its_description() -> None:
    policy = Policy(windows=(Window("XAUUSD", "15:59", "16:01"),))
    plan = decide(policy)
    assert (
        isinstance(plan, Omit) and plan.reason == "no_trade_window" and "15:59" in str(plan.detail["window"])
    )
    assert isinstance(decide(Policy(windows=(Window("EURUSD", "15:59", "16:01"),))), Copy)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"symbol": "*", "start_utc": "25:00", "end_utc": "01:00"}, "HH:MM within a day"),
        ({"symbol": "*", "start_utc": "10:00", "end_utc": "2025-01-01T00:00:00Z"}, "both be"),
        ({"symbol": "*", "start_utc": "2025-01-02T00:00:00Z", "end_utc": "2025-01-01T00:00:00Z"}, "after"),
        ({"symbol": "*", "start_utc": "10:00", "end_utc": "11:00", "pre_buffer_sec": -1}, "pre_buffer_sec"),
        ({"symbol": "*", "start_utc": "10:00"}, "end_utc"),
    ],
)
def test_bad_windows_are_rejected_naming_the_key(window: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict({"policy": {"51001": {"windows": [window]}}})
    assert "policy.51001.windows[0]" in str(info.value)


# ----------------------------------------------------------------------------------------------- stops


def test_offsets_move_stops_outward_for_buys_and_sells() -> None:
    policy = Policy(sl_offset=50, tp_offset=20)
    buy = plan_stops(policy, gold_intent(sl=2390.0, tp=2420.0), GOLD, 2400.0, 2400.2)
    assert (buy.stop_loss, buy.take_profit, buy.after_fill) == (2389.5, 2420.2, False)
    sell = plan_stops(policy, gold_intent(Side.SELL, sl=2410.0, tp=2380.0), GOLD, 2400.0, 2400.2)
    assert (sell.stop_loss, sell.take_profit) == (2410.5, 2379.8)


def test_catastrophic_stop_when_no_stop_is_copied() -> None:
    plan = plan_stops(Policy(catastrophic_sl=2000), gold_intent(sl=None), GOLD, 2400.0, 2400.2)
    assert plan.stop_loss == 2380.2 and plan.detail["catastrophic_sl_points"] == 2000


def test_a_master_removing_its_sl_leaves_the_catastrophic_sl_in_place() -> None:
    policy = Policy(catastrophic_sl=2000, sl_offset=5)
    # the master moves its SL: mirrored with the offset, as at entry
    assert modified_stops(policy, Side.BUY, GOLD, 2390.0, 2420.0, 2400.2) == (2389.95, 2420.0)
    # the master takes its SL off: the slave keeps the catastrophic SL from its own fill price
    assert modified_stops(policy, Side.BUY, GOLD, None, 2420.0, 2400.2) == (2380.2, 2420.0)
    assert modified_stops(policy, Side.SELL, GOLD, None, None, 2400.0) == (2420.0, None)
    # without a catastrophic SL in the policy, removing the master's SL removes the slave's
    assert modified_stops(Policy(), Side.BUY, GOLD, None, 2420.0, 2400.2) == (None, 2420.0)


def test_stops_inside_the_stop_level_go_on_after_the_fill() -> None:
    # StopLevel 30 points = 0.30: an SL 0.20 below the bid is refused at entry by the broker
    near = decide(Policy(), gold_intent(sl=2399.8, tp=2420.0))
    assert isinstance(near, Copy) and near.stop_loss is None and near.take_profit is None
    assert near.after_fill == (2399.8, 2420.0)
    far = decide(Policy(), gold_intent(sl=2399.7, tp=2420.0))
    assert isinstance(far, Copy) and far.after_fill is None and far.stop_loss == 2399.7


# ---------------------------------------------------------------------------------------------- config


def test_policy_config_merges_default_and_account() -> None:
    cfg = config_from_dict(
        {
            "core": {"fixed_lot": 0.2},
            "policy": {"default": {"max_spread": 30}, "51001": {"risk_fixed": 100.0}},
        }
    )
    policies = cfg.policies()
    assert policies.default == Policy(fixed_lot=0.2, max_spread=30)
    assert policies.for_account("51001") == Policy(
        sizing="risk", risk_fixed=100.0, fixed_lot=0.2, max_spread=30
    )
    assert policies.for_account("51002") is policies.default


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_spread": -1}, "policy.51001: max_spread must be 0..1e+06"),
        ({"risk_fixed": "100"}, "risk_fixed must be a number"),
        ({"sizing": "risk"}, "needs risk_fixed"),
        ({"sizing": "martingale"}, "sizing must be"),
        ({"max_delay_ms": 1.5}, "max_delay_ms must be an integer"),
        ({"copy_sl_tp": "yes"}, "copy_sl_tp must be true or false"),
        ({"spread": 3}, "unknown key policy.51001.spread"),
        ({"min_lot_action": "round_up"}, "min_lot_action must be skip or clamp"),
        ({"max_risk_multiple": 0.5}, "policy.51001: max_risk_multiple must be 1..100"),
        ({"max_risk_multiple": "2"}, "max_risk_multiple must be a number"),
    ],
)
def test_bad_policy_values_name_the_key_and_range(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        config_from_dict({"policy": {"51001": table}})


def test_policy_tables_must_be_accounts() -> None:
    with pytest.raises(ConfigError, match=r"policy\.not an account"):
        config_from_dict({"policy": {"not an account": {}}})


def test_min_lot_action_from_config_defaults_to_skip() -> None:
    policies = config_from_dict(
        {"policy": {"51001": {"min_lot_action": "clamp", "max_risk_multiple": 2}}}
    ).policies()
    assert (policies.default.min_lot_action, policies.default.max_risk_multiple) == ("skip", 1.5)
    clamp = policies.for_account("51001")
    assert (clamp.min_lot_action, clamp.max_risk_multiple) == ("clamp", 2)


# --------------------------------------------------------------------------------- below the broker's min_lot


def test_below_min_lot_is_skipped_by_default() -> None:
    # risk 7 over 10.00 of stop (1000 per lot) = 0.007 lots, below min_lot 0.01
    sized = size_entry(Policy(sizing="risk", risk_fixed=7.0), gold_intent(), GOLD, 1.0)
    assert isinstance(sized, NotSized) and sized.reason == "lot_below_min_lot"
    assert sized.detail["min_lot_action"] == "skip" and sized.detail["raw_lots"] == 0.007


def test_clamp_opens_min_lot_when_its_risk_stays_within_the_multiple() -> None:
    policy = Policy(sizing="risk", risk_fixed=7.0, min_lot_action="clamp", max_risk_multiple=1.5)
    sized = size_entry(policy, gold_intent(), GOLD, 1.0)
    assert isinstance(sized, Sized) and sized.lots == GOLD.min_lot
    assert sized.detail["sized"] == "min_lot"
    assert sized.detail["min_lot_risk"] == 10.0 and sized.detail["effective_risk"] == 10.0
    assert sized.detail["min_lot_multiple"] == pytest.approx(10 / 7, abs=1e-4)
    # risk 6: min_lot would risk 10, 1.67x the configured 6: more than 1.5x, skipped all the same
    over = size_entry(dataclasses.replace(policy, risk_fixed=6.0), gold_intent(), GOLD, 1.0)
    assert isinstance(over, NotSized) and over.reason == "lot_below_min_lot"
    assert over.detail["min_lot_risk"] == 10.0 and over.detail["max_risk_multiple"] == 1.5


def test_clamp_applies_to_fixed_and_multiplied_sizes_as_a_size_multiple() -> None:
    clamp = Policy(fixed_lot=0.007, min_lot_action="clamp", max_risk_multiple=2.0)
    sized = size_entry(clamp, gold_intent(), GOLD, 1.0)
    assert isinstance(sized, Sized) and sized.lots == 0.01 and sized.detail["sized"] == "min_lot"
    tiny = dataclasses.replace(clamp, sizing="multiplier", lot_multiplier=0.004)  # 1.0 x 0.004 lots
    assert isinstance(size_entry(tiny, gold_intent(), GOLD, 1.0), NotSized)


def test_a_size_on_the_step_says_so_and_a_capped_one_says_max_lot() -> None:
    assert size_entry(Policy(fixed_lot=0.3), gold_intent(), GOLD, 1.0).detail["sized"] == "lot_step"
    capped = size_entry(Policy(fixed_lot=80.0), gold_intent(), GOLD, 1.0)
    assert isinstance(capped, Sized) and capped.lots == 50.0 and capped.detail["sized"] == "max_lot"


@given(
    risk=st.floats(0.01, 1_000),
    distance_ticks=st.integers(1, 239_999),
    tick_value=st.floats(0.01, 100),
    step_exp=st.integers(0, 2),
    multiple=st.floats(1, 100),
    clamp=st.booleans(),
)
def test_min_lot_action_properties(
    risk: float, distance_ticks: int, tick_value: float, step_exp: int, multiple: float, clamp: bool
) -> None:
    """On the step, within [min_lot, max_lot] or omitted; never above the configured risk unless clamped
    to min_lot, and then never above ``max_risk_multiple`` times it; ``skip`` never clamps."""
    step = [0.01, 0.1, 1.0][step_exp]
    spec = dataclasses.replace(GOLD, lot_step=step, min_lot=step, max_lot=step * 5000)
    intent = gold_intent(sl=round(2400.0 - distance_ticks * 0.01, 2))
    policy = Policy(
        sizing="risk",
        risk_fixed=risk,
        min_lot_action="clamp" if clamp else "skip",
        max_risk_multiple=multiple,
    )
    sized = size_entry(policy, intent, spec, tick_value)
    skipped = size_entry(dataclasses.replace(policy, min_lot_action="skip"), intent, spec, tick_value)
    if isinstance(sized, NotSized):
        assert sized.reason in ("lot_below_min_lot", "no_stop_loss")
        assert isinstance(skipped, NotSized)
        return
    assert intent.stop_loss is not None
    money_per_lot = abs(intent.price - intent.stop_loss) / spec.tick_size * tick_value
    assert spec.min_lot <= sized.lots <= spec.max_lot
    assert (Decimal(repr(sized.lots)) / Decimal(repr(step))) % 1 == 0
    if sized.detail["sized"] == "min_lot":
        assert clamp and isinstance(skipped, NotSized) and sized.lots == spec.min_lot
        assert sized.lots * money_per_lot <= risk * multiple * (1 + 1e-6)
    else:
        assert isinstance(skipped, Sized) and skipped.lots == sized.lots
        assert sized.lots * money_per_lot <= risk * (1 + 1e-9)


# ----------------------------------------------------------------------------------------- offline slave


def test_an_offline_slave_that_needs_a_fresh_quote_is_omitted_as_offline() -> None:
    offline = dataclasses.replace(view(Policy(max_spread=50), age_ms=60_000), online=False)
    (plan,) = plan_open(gold_intent(), "XAUUSD", [offline], NOW, NOW)
    assert isinstance(plan, Omit) and plan.reason == "slave_offline"
    assert plan.detail["needs"] == "quote" and plan.detail["quote_max_age_ms"] == 5_000
    # online with the same stale quote: the quote is what is missing
    (online,) = plan_open(gold_intent(), "XAUUSD", [dataclasses.replace(offline, online=True)], NOW, NOW)
    assert isinstance(online, Omit) and online.reason == "quote_missing"
    # offline without a limit that needs a price: copied, delivered when the terminal is back
    (held,) = plan_open(gold_intent(), "XAUUSD", [dataclasses.replace(offline, policy=Policy())], NOW, NOW)
    assert isinstance(held, Copy)


def test_an_offline_slave_with_a_stale_tick_value_is_omitted_as_offline() -> None:
    stale = dataclasses.replace(
        view(Policy(sizing="risk", risk_fixed=100.0)), tick_values_at_ms=NOW - 60_001, online=False
    )
    (plan,) = plan_open(gold_intent(), "XAUUSD", [stale], NOW, NOW)
    assert isinstance(plan, Omit) and plan.reason == "slave_offline" and plan.detail["needs"] == "tick_value"


def test_without_a_slave_quote_stops_need_twice_the_stop_level_from_the_masters_price() -> None:
    # StopLevel 30 points = 0.30 from the master's 2400.00: 0.45 passes with a quote, not without one
    with_quote = plan_stops(Policy(), gold_intent(sl=2399.55), GOLD, 2400.0, 2400.2)
    without = plan_stops(Policy(), gold_intent(sl=2399.55), GOLD, None, None)
    assert (with_quote.after_fill, without.after_fill) == (False, True)
    assert without.detail["reference"] == "master price"
    assert not plan_stops(Policy(), gold_intent(sl=2399.4), GOLD, None, None).after_fill


def test_a_stale_tick_value_omits_a_risk_sized_entry_only() -> None:
    stale = dataclasses.replace(view(Policy(sizing="risk", risk_fixed=100.0)), tick_values_at_ms=NOW - 60_001)
    (plan,) = plan_open(gold_intent(), "XAUUSD", [stale], NOW, NOW)
    assert isinstance(plan, Omit) and plan.reason == "tick_value_missing" and plan.detail["stale"] is True
    fresh = dataclasses.replace(stale, tick_values_at_ms=NOW - 60_000)
    assert isinstance(plan_open(gold_intent(), "XAUUSD", [fresh], NOW, NOW)[0], Copy)
    fixed = dataclasses.replace(stale, policy=Policy(fixed_lot=0.2))
    assert isinstance(plan_open(gold_intent(), "XAUUSD", [fixed], NOW, NOW)[0], Copy)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_KEY_NAMES = [
    "sizing", "risk_fixed", "fixed_lot", "max_spread", "max_delay_ms", "windows", "risk_by_strategy",
    "copy_sl_tp", "sl_offset", "catastrophic_sl", "symbol", "start_utc", "end_utc", "pre_buffer_sec",
    "min_version", "blocked_versions", "required_features", "canonical", "unknown_action",
    "min_lot_action", "max_risk_multiple",
]  # fmt: skip
_KEYS = st.sampled_from(_KEY_NAMES)


@given(
    st.dictionaries(
        st.sampled_from(["policy", "protocol", "symbols"]),
        st.dictionaries(
            st.sampled_from(["default", "51001", "x y", *_KEY_NAMES]),
            st.dictionaries(_KEYS, _JSONISH, max_size=4) | _JSONISH,
            max_size=3,
        ),
        max_size=3,
    )
)
def test_garbage_policy_protocol_and_symbol_sections_only_ever_raise_config_error(
    raw: dict[str, object],
) -> None:
    with contextlib.suppress(ConfigError):
        config_from_dict(raw)
