"""The simulated market, broker and broker profiles."""

from __future__ import annotations

import random

import pytest

from echo.domain.errors import ErrorCode
from echo.domain.types import Side, SymbolSpec, normalize_symbol
from echo.sim.broker import BrokerError, SimBroker
from echo.sim.market import SimMarket
from echo.sim.profiles import (
    MASTER_PROFILE,
    PROFILE_NAMES,
    PROFILES,
    SLAVE_PROFILE_NAMES,
    master_broker,
    slave_broker,
)

NOW = 1_700_000_000_000

GOLD = SymbolSpec(
    broker_symbol="XAUUSD.t",
    canonical_symbol="XAUUSD",
    digits=2,
    point=0.01,
    tick_size=0.01,
    min_lot=0.1,
    max_lot=5.0,
    lot_step=0.1,
    stop_level=20,
    contract_size=100.0,
)


def make_broker(slippage_points: int = 0, max_positions: int = 1000) -> SimBroker:
    market = SimMarket(random.Random(1), {"XAUUSD": 2350.0})
    return SimBroker(
        "test",
        market,
        [GOLD],
        random.Random(2),
        spread_points={"XAUUSD.t": 30},
        slippage_points=slippage_points,
        tick_values={"XAUUSD.t": 1.0},
        max_positions=max_positions,
        ticket_base=5_000,
    )


def rejects(mt4_error: int, code: ErrorCode) -> pytest.RaisesExc[BrokerError]:
    return pytest.raises(BrokerError, check=lambda e: e.mt4_error == mt4_error and e.code is code)


# --------------------------------------------------------------------------------------------- market


def test_market_walk_is_deterministic_and_positive() -> None:
    a = SimMarket(random.Random(7))
    b = SimMarket(random.Random(7))
    start = a.mid("XAUUSD")
    for _ in range(1000):
        a.step(0.25)
        b.step(0.25)
    assert a.mid("XAUUSD") == b.mid("XAUUSD") != start
    assert all(a.mid(s) > 0 for s in a.symbols)
    assert abs(a.mid("EURUSD") / 1.085 - 1) < 0.05
    with pytest.raises(KeyError):
        a.mid("NOPE")


# --------------------------------------------------------------------------------------------- quotes


def test_quote_is_spread_around_mid_rounded_to_digits() -> None:
    broker = make_broker()
    assert broker.quote("XAUUSD.t") == (2349.85, 2350.15)
    broker.market.set_mid("XAUUSD", 2350.1234)
    bid, ask = broker.quote("XAUUSD.t")
    assert (bid, ask) == (round(bid, 2), round(ask, 2))
    assert round((ask - bid) / GOLD.point) == 30


def test_unknown_symbol() -> None:
    broker = make_broker()
    with rejects(4106, ErrorCode.ERR_UNKNOWN_SYMBOL):
        broker.quote("XAUUSD")
    with rejects(4106, ErrorCode.ERR_UNKNOWN_SYMBOL):
        broker.market_order("XAUUSD", Side.BUY, 0.1, None, None, 1, "", NOW)


# --------------------------------------------------------------------------------------------- fills


def test_market_orders_fill_at_ask_and_bid_with_sequential_tickets() -> None:
    broker = make_broker()
    buy = broker.market_order("XAUUSD.t", Side.BUY, 0.3, 2340.0, 2360.0, 77, "echo:abc", NOW)
    sell = broker.market_order("XAUUSD.t", Side.SELL, 1.0, None, None, 78, "", NOW + 1)
    assert (buy.ticket, sell.ticket) == (5_000, 5_001)
    assert buy.open_price == 2350.15
    assert sell.open_price == 2349.85
    assert (buy.stop_loss, buy.take_profit, buy.magic_number, buy.comment) == (2340.0, 2360.0, 77, "echo:abc")
    assert [o.ticket for o in broker.open_orders()] == [5_000, 5_001]


def test_slippage_stays_within_bound() -> None:
    broker = make_broker(slippage_points=5)
    prices = {
        broker.market_order("XAUUSD.t", Side.BUY, 0.1, None, None, 1, "", NOW).open_price for _ in range(200)
    }
    assert min(prices) >= 2350.10 and max(prices) <= 2350.20
    assert len(prices) > 1


@pytest.mark.parametrize("lots", [0.05, 0.15, 5.1, 0.0, -0.1, float("nan")])
def test_invalid_lots(lots: float) -> None:
    with rejects(131, ErrorCode.ERR_INVALID_TRADE_VOLUME):
        make_broker().market_order("XAUUSD.t", Side.BUY, lots, None, None, 1, "", NOW)


@pytest.mark.parametrize(
    ("side", "sl", "tp"),
    [
        (Side.BUY, 2351.0, None),  # SL above the bid
        (Side.BUY, None, 2349.0),  # TP below the bid
        (Side.BUY, 2349.70, None),  # 15 points below the bid: inside the stop level of 20
        (Side.SELL, 2349.0, None),  # SL below the ask
        (Side.SELL, None, 2350.30),  # TP above the ask
        (Side.SELL, 2350.30, None),  # 15 points above the ask: inside the stop level
    ],
)
def test_invalid_stops(side: Side, sl: float | None, tp: float | None) -> None:
    broker = make_broker()
    with rejects(130, ErrorCode.ERR_INVALID_STOPS):
        broker.market_order("XAUUSD.t", side, 0.1, sl, tp, 1, "", NOW)
    assert broker.open_orders() == []


def test_stops_at_exactly_the_stop_level_and_zero_mean_none() -> None:
    broker = make_broker()
    buy = broker.market_order("XAUUSD.t", Side.BUY, 0.1, 2349.65, 0.0, 1, "", NOW)
    sell = broker.market_order("XAUUSD.t", Side.SELL, 0.1, 2350.35, 2349.95, 1, "", NOW)
    assert (buy.stop_loss, buy.take_profit) == (2349.65, None)
    assert (sell.stop_loss, sell.take_profit) == (2350.35, 2349.95)


def test_max_positions() -> None:
    broker = make_broker(max_positions=1)
    broker.market_order("XAUUSD.t", Side.BUY, 0.1, None, None, 1, "", NOW)
    with pytest.raises(BrokerError) as info:
        broker.market_order("XAUUSD.t", Side.BUY, 0.1, None, None, 1, "", NOW)
    assert info.value.mt4_error == 148


# --------------------------------------------------------------------------------------------- close / modify


def test_full_close_realizes_profit() -> None:
    broker = make_broker()
    order = broker.market_order("XAUUSD.t", Side.BUY, 0.5, None, None, 1, "c", NOW)
    broker.market.set_mid("XAUUSD", 2360.0)
    fill = broker.close(order.ticket, 0.5, NOW + 1000)
    assert (fill.closed_lots, fill.price, fill.new_ticket, fill.remaining_lots) == (0.5, 2359.85, None, 0.0)
    # (2359.85 - 2350.15) / 0.01 ticks * 1.0 per tick * 0.5 lots
    assert fill.profit == pytest.approx(485.0)
    assert broker.balance == pytest.approx(10_485.0)
    assert broker.open_orders() == []
    assert broker.history[0].close_time_ms == NOW + 1000
    with rejects(4108, ErrorCode.ERR_INVALID_TICKET):
        broker.close(order.ticket, 0.5, NOW)


def test_close_more_than_open_closes_all() -> None:
    broker = make_broker()
    order = broker.market_order("XAUUSD.t", Side.SELL, 0.3, None, None, 1, "", NOW)
    fill = broker.close(order.ticket, 9.9, NOW)
    assert (fill.closed_lots, fill.new_ticket, fill.remaining_lots) == (0.3, None, 0.0)
    assert fill.price == 2350.15


def test_partial_close_moves_remainder_to_new_ticket_keeping_comment() -> None:
    broker = make_broker()
    order = broker.market_order("XAUUSD.t", Side.SELL, 1.0, 2360.0, 2340.0, 42, "echo:0192abcd", NOW)
    fill = broker.close(order.ticket, 0.3, NOW + 5)
    assert fill.closed_lots == 0.3
    assert fill.remaining_lots == 0.7
    assert fill.new_ticket == order.ticket + 1
    [rest] = broker.open_orders()
    assert rest.ticket == fill.new_ticket
    assert (rest.symbol, rest.side, rest.lots, rest.magic_number, rest.comment) == (
        "XAUUSD.t",
        Side.SELL,
        0.7,
        42,
        "echo:0192abcd",
    )
    assert (rest.open_price, rest.open_time_ms, rest.stop_loss, rest.take_profit) == (
        order.open_price,
        NOW,
        2360.0,
        2340.0,
    )
    [old] = broker.history
    assert (old.ticket, old.lots, old.close_time_ms) == (order.ticket, 0.3, NOW + 5)
    with rejects(4108, ErrorCode.ERR_INVALID_TICKET):
        broker.close(order.ticket, 0.1, NOW)


@pytest.mark.parametrize("lots", [0.05, 0.25, 0.95, 0.0])
def test_partial_close_with_invalid_volume(lots: float) -> None:
    broker = make_broker()
    order = broker.market_order("XAUUSD.t", Side.BUY, 1.0, None, None, 1, "", NOW)
    with rejects(131, ErrorCode.ERR_INVALID_TRADE_VOLUME):
        broker.close(order.ticket, lots, NOW)
    assert broker.open_orders() == [order]


def test_modify_validates_stops() -> None:
    broker = make_broker()
    order = broker.market_order("XAUUSD.t", Side.BUY, 0.1, None, None, 1, "", NOW)
    assert broker.modify(order.ticket, 2340.0, 2370.0).stop_loss == 2340.0
    assert (order.stop_loss, order.take_profit) == (2340.0, 2370.0)
    with rejects(130, ErrorCode.ERR_INVALID_STOPS):
        broker.modify(order.ticket, 2349.80, None)
    assert order.stop_loss == 2340.0
    assert broker.modify(order.ticket, None, None).take_profit is None
    with rejects(4108, ErrorCode.ERR_INVALID_TICKET):
        broker.modify(123, None, None)


def test_account_figures() -> None:
    broker = make_broker()
    assert broker.equity() == broker.balance == 10_000.0
    broker.market_order("XAUUSD.t", Side.BUY, 1.0, None, None, 1, "", NOW)
    assert broker.equity() == pytest.approx(10_000.0 - 30.0)  # the spread
    assert broker.margin() == pytest.approx(2350.15 * 100 / 100)
    assert broker.tick_value("XAUUSD.t") == 1.0


# --------------------------------------------------------------------------------------------- profiles


def all_brokers() -> list[SimBroker]:
    market = SimMarket(random.Random(3))
    rng = random.Random(4)
    return [master_broker(market, rng)] + [
        slave_broker(i, market, rng) for i in range(len(SLAVE_PROFILE_NAMES))
    ]


def test_profiles_cycle_by_index() -> None:
    market = SimMarket(random.Random(3))
    rng = random.Random(4)
    n = len(SLAVE_PROFILE_NAMES)
    assert n >= 4
    assert (MASTER_PROFILE, *SLAVE_PROFILE_NAMES) == PROFILE_NAMES
    assert slave_broker(1, market, rng).specs.keys() == slave_broker(1 + n, market, rng).specs.keys()
    assert slave_broker(0, market, rng).name == f"{SLAVE_PROFILE_NAMES[0]}-0"
    assert set(master_broker(market, rng).specs) == {"XAUUSD", "EURUSD", "GER30", "US100"}


def test_every_broker_symbol_normalizes_to_its_canonical() -> None:
    canonicals = {"XAUUSD", "EURUSD", "GER30", "US100"}
    for profile in PROFILES.values():
        assert {s.canonical for s in profile.symbols} == canonicals
    for broker in all_brokers():
        for symbol, spec in broker.specs.items():
            assert normalize_symbol(symbol) == spec.canonical_symbol
        assert {s.canonical_symbol for s in broker.specs.values()} == canonicals


def test_slave_symbols_differ_from_master() -> None:
    master, *slaves = all_brokers()
    names = [frozenset(b.specs) for b in slaves]
    assert len(set(names)) == len(slaves)
    assert all(n.isdisjoint(master.specs) for n in names)


def test_fixed_lot_is_valid_everywhere_and_quotes_work() -> None:
    for broker in all_brokers():
        for symbol, spec in broker.specs.items():
            assert spec.lots_valid(0.10), (broker.name, symbol)
            bid, ask = broker.quote(symbol)
            assert 0 < bid <= ask
            assert broker.tick_value(symbol) > 0
            order = broker.market_order(symbol, Side.BUY, 0.1, None, None, 1, "", NOW)
            broker.close(order.ticket, 0.1, NOW)


def test_specs_differ_across_profiles() -> None:
    gold = [b.specs[s] for b in all_brokers() for s in b.specs if b.specs[s].canonical_symbol == "XAUUSD"]
    assert {s.digits for s in gold} >= {2, 3}
    specs = [spec for b in all_brokers() for spec in b.specs.values()]
    assert {s.min_lot for s in specs} >= {0.01, 0.1}
    assert {s.lot_step for s in specs} >= {0.01, 0.1}
    assert min(s.stop_level for s in specs) == 0
    assert max(s.stop_level for s in specs) == 50
    assert {s.contract_size for s in specs if s.canonical_symbol == "GER30"} >= {1.0, 5.0, 25.0}
    assert any(s.tick_size != s.point for s in specs)
    assert len({b.slippage_points for b in all_brokers()}) > 1
