"""The domain's rules: identifiers, symbol specs and lot/price rounding, symbol normalization, message
validation and the translation of MT4 error numbers."""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.domain import messages as m
from echo.domain.errors import MT4_ERRORS, MT4_NUMBERS, ErrorCode, ProtocolError, from_mt4
from echo.domain.ids import (
    InvalidId,
    parse_account_id,
    parse_agent_id,
    parse_command_id,
    parse_event_id,
    parse_magic,
    parse_ticket,
    parse_trace_id,
    parse_trade_id,
    trace_id_from,
    uuid7,
    uuid7_time_ms,
)
from echo.domain.types import Role, Side, SpecError, SymbolSpec, normalize_symbol

T = 1764063000000
RAND = bytes(range(10))
TRADE_ID = uuid7(T, RAND)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
V4 = "3f2b8c1e-9a4d-4c6b-8e2f-0d1c2b3a4f5e"

# ------------------------------------------------------------------------------------------------- ids


@settings(max_examples=200)
@given(unix_ms=st.integers(0, 2**48 - 1), rand=st.binary(min_size=10, max_size=16))
def test_uuid7_layout(unix_ms: int, rand: bytes) -> None:
    value = uuid7(unix_ms, rand)
    u = uuid.UUID(value)
    assert value == str(u) and value == value.lower() and len(value) == 36
    assert u.version == 7 and value[14] == "7"
    assert u.int >> 62 & 0b11 == 0b10  # RFC 9562 variant
    assert u.variant == uuid.RFC_4122
    assert uuid7_time_ms(value) == unix_ms
    assert parse_trade_id(value) == value


@given(a=st.integers(0, 2**48 - 2), rand=st.binary(min_size=10, max_size=10))
def test_uuid7_sorts_by_time(a: int, rand: bytes) -> None:
    assert uuid7(a, b"\xff" * 10) < uuid7(a + 1, rand)


def test_uuid7_uses_the_random_bits() -> None:
    assert uuid7(T, RAND) != uuid7(T, bytes(range(1, 11)))
    assert uuid7(T, RAND) == uuid7(T, RAND + b"extra")  # only the first 10 bytes count


@pytest.mark.parametrize(("unix_ms", "rand"), [(-1, RAND), (2**48, RAND), (T, b"123456789")])
def test_uuid7_rejects_bad_parts(unix_ms: int, rand: bytes) -> None:
    with pytest.raises(InvalidId):
        uuid7(unix_ms, rand)


@pytest.mark.parametrize("parse", [parse_trade_id, parse_command_id, parse_event_id])
def test_parse_uuid7_ids(parse: Any) -> None:
    assert parse(TRADE_ID) == TRADE_ID
    kind = parse.__name__.removeprefix("parse_")
    for bad in [
        V4,
        TRADE_ID.upper(),
        TRADE_ID.replace("-", ""),
        "{" + TRADE_ID + "}",
        TRADE_ID + " ",
        TRADE_ID + "\n",
        "",
        "not-a-uuid",
        12345,
        None,
    ]:
        with pytest.raises(InvalidId, match=kind):
            parse(bad)


def test_parse_trace_id() -> None:
    assert parse_trace_id(TRACE_ID) == TRACE_ID
    bad_ids = ["0" * 32, TRACE_ID.upper(), TRACE_ID[:-1], TRACE_ID + "0", TRACE_ID + "\n", "g" * 32, None, 7]
    for bad in bad_ids:
        with pytest.raises(InvalidId, match="trace_id"):
            parse_trace_id(bad)  # type: ignore[arg-type]


def test_trace_id_from_random_bytes() -> None:
    assert trace_id_from(bytes(range(16))) == bytes(range(16)).hex()
    assert trace_id_from(bytes(16)) == "0" * 31 + "1"  # never all zeros
    assert parse_trace_id(trace_id_from(bytes(16)))
    with pytest.raises(InvalidId):
        trace_id_from(bytes(15))


@pytest.mark.parametrize("parse", [parse_account_id, parse_agent_id])
def test_parse_account_and_agent_ids(parse: Any) -> None:
    for good in ["51234567", "agent-host1", "a.b_c-D", "x" * 64]:
        assert parse(good) == good
    for bad in ["", "x" * 65, "a b", "ñ", "a/b", "51234567\n", 51234567, None]:
        with pytest.raises(InvalidId):
            parse(bad)


def test_parse_ticket_and_magic() -> None:
    assert parse_ticket(1) == 1 and parse_ticket(2**63 - 1) == 2**63 - 1
    for bad in [0, -1, 2**63, True, 1.0, "1", None]:
        with pytest.raises(InvalidId, match="ticket"):
            parse_ticket(bad)  # type: ignore[arg-type]
    assert parse_magic(0) == 0 and parse_magic(2**63 - 1) == 2**63 - 1
    for bad in [-1, 2**63, False, 1.5, "7"]:
        with pytest.raises(InvalidId, match="magic_number"):
            parse_magic(bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- symbol spec


def spec(**changes: Any) -> SymbolSpec:
    fields: dict[str, Any] = {
        "broker_symbol": "XAUUSD.m",
        "canonical_symbol": "XAUUSD",
        "digits": 2,
        "point": 0.01,
        "tick_size": 0.01,
        "min_lot": 0.01,
        "max_lot": 100.0,
        "lot_step": 0.01,
        "stop_level": 30,
    }
    fields.update(changes)
    return SymbolSpec(**fields)


def test_a_valid_spec() -> None:
    s = spec(contract_size=100.0, tick_value=1.0)
    assert s.contract_size == 100.0 and s.tick_value == 1.0
    assert spec().contract_size is None and spec().tick_value is None
    assert spec(min_lot=1.0, max_lot=1.0).min_lot == 1.0  # min == max is allowed
    assert spec(digits=0).digits == 0 and spec(digits=10).digits == 10 and spec(stop_level=0).stop_level == 0


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"broker_symbol": ""}, "broker_symbol"),
        ({"broker_symbol": "X" * 33}, "broker_symbol"),
        ({"canonical_symbol": ""}, "canonical_symbol"),
        ({"digits": -1}, "digits"),
        ({"digits": 11}, "digits"),
        ({"point": 0.0}, "point"),
        ({"tick_size": -0.01}, "tick_size"),
        ({"min_lot": math.nan}, "min_lot"),
        ({"max_lot": math.inf}, "max_lot"),
        ({"lot_step": 0.0}, "lot_step"),
        ({"min_lot": 2.0, "max_lot": 1.0}, "min_lot"),
        ({"stop_level": -1}, "stop_level"),
        ({"contract_size": -1.0}, "contract_size"),
        ({"tick_value": math.nan}, "tick_value"),
    ],
)
def test_spec_validation(changes: dict[str, Any], names: str) -> None:
    with pytest.raises(SpecError, match=names):
        spec(**changes)


LOTS_001 = spec()
LOTS_01 = spec(broker_symbol="GER30.x", canonical_symbol="GER30", digits=1, point=0.1, tick_size=0.1,
               min_lot=0.1, max_lot=50.0, lot_step=0.1)  # fmt: skip


@pytest.mark.parametrize(
    ("s", "lots", "down"),
    [
        (LOTS_001, 0.019, 0.01),
        (LOTS_001, 1.2345, 1.23),
        (LOTS_001, 0.29, 0.29),  # 0.29 / 0.01 == 28.999999999999996 in binary floats
        (LOTS_001, 0.57, 0.57),  # 0.57 / 0.01 == 56.99999999999999
        (LOTS_001, 1.0, 1.0),
        (LOTS_001, 0.009, 0.0),
        (LOTS_01, 0.3, 0.3),  # 0.3 / 0.1 == 2.9999999999999996
        (LOTS_01, 0.7, 0.7),  # 0.7 / 0.1 == 6.999999999999999
        (LOTS_01, 0.35, 0.3),
        (LOTS_01, 1.99, 1.9),
        (LOTS_01, 12.0, 12.0),
    ],
)
def test_round_lots_down(s: SymbolSpec, lots: float, down: float) -> None:
    assert s.round_lots_down(lots) == down
    assert s.lots_valid(down) or down < s.min_lot


def test_round_lots_down_avoids_the_naive_float_trap() -> None:
    assert math.floor(0.3 / 0.1) * 0.1 != 0.3  # what a naive implementation gets wrong
    assert LOTS_01.round_lots_down(0.3) == 0.3


@pytest.mark.parametrize(
    ("s", "lots", "clamped"),
    [
        (LOTS_001, 0.001, 0.01),
        (LOTS_001, 0.0, 0.01),
        (LOTS_001, 0.29, 0.29),
        (LOTS_001, 250.0, 100.0),
        (LOTS_01, 0.05, 0.1),
        (LOTS_01, 0.3, 0.3),
        (LOTS_01, 0.39, 0.3),
        (LOTS_01, 75.55, 50.0),
    ],
)
def test_clamp_lots(s: SymbolSpec, lots: float, clamped: float) -> None:
    assert s.clamp_lots(lots) == clamped


@pytest.mark.parametrize(
    ("s", "lots", "valid"),
    [
        (LOTS_001, 0.01, True),
        (LOTS_001, 0.07, True),
        (LOTS_001, 0.29, True),
        (LOTS_001, 0.015, False),
        (LOTS_001, 0.005, False),
        (LOTS_001, 100.0, True),
        (LOTS_001, 100.01, False),
        (LOTS_01, 0.3, True),
        (LOTS_01, 0.7, True),
        (LOTS_01, 0.35, False),
        (LOTS_01, 0.01, False),
        (LOTS_01, math.nan, False),
        (LOTS_01, math.inf, False),
        (LOTS_01, -0.3, False),
    ],
)
def test_lots_valid(s: SymbolSpec, lots: float, valid: bool) -> None:
    assert s.lots_valid(lots) is valid


@st.composite
def lot_specs(draw: st.DrawFn) -> SymbolSpec:
    """Specs as brokers publish them: min_lot and max_lot are multiples of lot_step."""
    step = draw(st.sampled_from(["0.01", "0.1", "1", "0.05", "0.001", "0.5"]))
    k_min = draw(st.integers(1, 100))
    k_max = draw(st.integers(k_min, 100_000))
    d = Decimal(step)
    return spec(lot_step=float(d), min_lot=float(k_min * d), max_lot=float(k_max * d))


lot_inputs = st.floats(min_value=0.0, max_value=1e6, allow_nan=False) | st.decimals(
    "0", "1000", places=3
).map(float)


@settings(max_examples=300)
@given(s=lot_specs(), lots=lot_inputs)
def test_clamp_lots_properties(s: SymbolSpec, lots: float) -> None:
    out = s.clamp_lots(lots)
    assert s.min_lot <= out <= s.max_lot
    assert s.lots_valid(out)  # a multiple of lot_step, within the limits
    if lots >= s.min_lot:
        assert out <= lots  # never more than asked (a copier must not exceed the intended size)
    else:
        assert out == s.min_lot
    assert s.clamp_lots(out) == out  # idempotent


@settings(max_examples=300)
@given(s=lot_specs(), lots=lot_inputs)
def test_round_lots_down_properties(s: SymbolSpec, lots: float) -> None:
    out = s.round_lots_down(lots)
    assert 0 <= out <= lots
    assert lots - out < s.lot_step + 1e-9
    assert s.round_lots_down(out) == out


@pytest.mark.parametrize(
    ("digits", "price", "rounded"),
    [
        (2, 2.675, 2.68),  # round(2.675, 2) == 2.67 in binary floats; the spec rounds the decimal value
        (2, 0.125, 0.12),  # half to even
        (2, 0.135, 0.14),
        (5, 1.234565, 1.23456),
        (5, 1.234575, 1.23458),
        (1, 23975.44, 23975.4),
        (0, 23975.5, 23976.0),
        (0, 23976.5, 23976.0),
        (3, 150.0, 150.0),
    ],
)
def test_round_price(digits: int, price: float, rounded: float) -> None:
    assert spec(digits=digits).round_price(price) == rounded


def test_points_between() -> None:
    assert spec().points_between(2398.52, 2398.45) == pytest.approx(7.0)
    assert spec(digits=5, point=0.00001).points_between(1.1, 1.1002) == pytest.approx(20.0)


# ------------------------------------------------------------------------------------ normalize_symbol


@pytest.mark.parametrize(
    ("broker", "canonical"),
    [
        ("XAUUSD.m", "XAUUSD"),
        ("GER30.x", "GER30"),
        ("EURUSDpro", "EURUSD"),
        ("#US100_cash", "US100"),
        ("eurusd", "EURUSD"),
        ("EURUSD+", "EURUSD"),
        ("EURUSD!", "EURUSD"),
        ("US30", "US30"),
        ("XAUUSDm", "XAUUSD"),
        ("XAUUSD-ECN", "XAUUSD"),
        ("US100.cash", "US100"),
        ("DE30.cash", "DE30"),
        (" GBPJPY.r ", "GBPJPY"),
        ("XAUUSD", "XAUUSD"),
    ],
)
def test_normalize_symbol(broker: str, canonical: str) -> None:
    assert normalize_symbol(broker) == canonical


symbol_text = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.#_-+! ", max_size=16)


@settings(max_examples=300)
@given(symbol=symbol_text)
def test_normalize_symbol_output_shape(symbol: str) -> None:
    out = normalize_symbol(symbol)
    assert out == out.upper()
    assert not any(c in out for c in ".#_-")


def test_normalize_symbol_is_idempotent() -> None:
    once = normalize_symbol("EURUSD+.m")
    assert normalize_symbol(once) == once == "EURUSD"


# ------------------------------------------------------------------------------------- messages


def intent(**changes: Any) -> m.TradeIntent:
    fields: dict[str, Any] = {
        "trade_id": TRADE_ID,
        "trace_id": TRACE_ID,
        "symbol": "XAUUSD.r",
        "side": Side.BUY,
        "lot_size": 1.0,
        "price": 2398.45,
        "magic_number": 20251125,
        "ticket": 7001001,
    }
    fields.update(changes)
    return m.TradeIntent(**fields)


EVENT_ID = uuid7(T + 1000, RAND)
COMMAND_ID = uuid7(T + 2000, RAND)
OK = ErrorCode.NO_ERROR


def test_a_valid_intent_and_its_defaults() -> None:
    ti = intent()
    assert ti.attempt == 1 and ti.stop_loss is None and ti.comment == "" and ti.opened_at_ms is None
    assert intent(stop_loss=0.0, take_profit=0.0).stop_loss == 0.0  # 0 = no stop, as in MT4


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"trade_id": V4}, "UUIDv7"),
        ({"trace_id": "0" * 32}, "trace_id"),
        ({"symbol": ""}, "symbol"),
        ({"symbol": "X" * 33}, "symbol"),
        ({"symbol": "XAU\nUSD"}, "symbol"),
        ({"lot_size": 0.0}, "lot_size"),
        ({"lot_size": -0.1}, "lot_size"),
        ({"lot_size": math.nan}, "lot_size"),
        ({"price": math.inf}, "price"),
        ({"magic_number": -1}, "magic_number"),
        ({"ticket": 0}, "ticket"),
        ({"stop_loss": -1.0}, "stop_loss"),
        ({"take_profit": math.nan}, "take_profit"),
        ({"attempt": 0}, "attempt"),
    ],
)
def test_intent_validation(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        intent(**changes)


def test_trade_close_partial_and_full() -> None:
    partial = m.TradeClose(
        EVENT_ID, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 0.4, 0.6, 2405.1, 1, new_ticket=7001077
    )
    assert partial.is_partial and partial.fraction == pytest.approx(0.4)
    full = m.TradeClose(EVENT_ID, TRADE_ID, TRACE_ID, 7001077, "XAUUSD.r", 0.6, 0.0, 2410.3, 1)
    assert not full.is_partial and full.fraction == 1.0 and full.new_ticket is None
    with pytest.raises(ValueError, match="new_ticket"):
        m.TradeClose(EVENT_ID, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 0.4, 0.6, 2405.1, 1)
    with pytest.raises(ValueError, match="remaining_lots"):
        m.TradeClose(EVENT_ID, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 0.4, -0.1, 2405.1, 1)
    with pytest.raises(ValueError, match="event_id"):
        m.TradeClose(V4, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 0.4, 0.0, 2405.1, 1)
    with pytest.raises(InvalidId, match="ticket"):
        m.TradeClose(EVENT_ID, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 0.4, 0.6, 2405.1, 1, new_ticket=0)


def test_trade_modify_and_ack() -> None:
    mod = m.TradeModify(EVENT_ID, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 1, stop_loss=2390.0)
    assert mod.take_profit is None
    with pytest.raises(ValueError, match="stop_loss"):
        m.TradeModify(EVENT_ID, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 1, stop_loss=-5.0)
    ack = m.TradeIntentAck(TRADE_ID, TRACE_ID, m.AckStatus.OK, event_id=EVENT_ID)
    assert ack.error_code is OK and ack.message == ""
    with pytest.raises(ValueError, match="event_id"):
        m.TradeIntentAck(TRADE_ID, TRACE_ID, m.AckStatus.OK, event_id=V4)


def test_execute_order_comment_fits_mt4() -> None:
    assert m.ExecuteOrder(COMMAND_ID, TRADE_ID, TRACE_ID, "XAUUSD.m", Side.BUY, 0.5, 1, "c" * 31).comment
    with pytest.raises(ValueError, match="31"):
        m.ExecuteOrder(COMMAND_ID, TRADE_ID, TRACE_ID, "XAUUSD.m", Side.BUY, 0.5, 1, "c" * 32)
    with pytest.raises(ValueError, match="command_id"):
        m.ExecuteOrder(TRADE_ID.upper(), TRADE_ID, TRACE_ID, "XAUUSD.m", Side.BUY, 0.5, 1, "")
    with pytest.raises(ValueError, match="lot_size"):
        m.CloseOrder(COMMAND_ID, TRADE_ID, TRACE_ID, 88001234, "XAUUSD.m", 0.0, 1)
    with pytest.raises(ValueError, match="take_profit"):
        m.ModifyOrder(COMMAND_ID, TRADE_ID, TRACE_ID, 88001234, "XAUUSD.m", None, -1.0)


def test_execution_result_rules() -> None:
    ok = m.ExecutionResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, ticket=88001234)
    assert ok.mt4_error == 0
    failed = m.ExecutionResult(COMMAND_ID, TRADE_ID, TRACE_ID, False, ErrorCode.ERR_OFF_QUOTES, mt4_error=136)
    assert failed.ticket is None
    with pytest.raises(ValueError, match="ticket"):
        m.ExecutionResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK)  # success without a ticket
    with pytest.raises(ValueError, match="NO_ERROR"):
        m.ExecutionResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, ErrorCode.ERR_REQUOTE, ticket=1)
    with pytest.raises(ValueError, match="ERR_"):
        m.ExecutionResult(COMMAND_ID, TRADE_ID, TRACE_ID, False, OK)
    with pytest.raises(InvalidId, match="ticket"):
        m.ExecutionResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, ticket=-5)


def test_close_result_rules() -> None:
    partial = m.CloseResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, 88001234, 0.2, 2405.02, 88001290, 0.3)
    assert partial.new_ticket == 88001290
    full = m.CloseResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, 88001290, 0.3, 2410.3)
    assert full.remaining_lots == 0.0
    with pytest.raises(ValueError, match="new_ticket"):
        m.CloseResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, 88001234, 0.2, 2405.02, None, 0.3)
    with pytest.raises(ValueError, match="NO_ERROR"):
        m.CloseResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, ErrorCode.ERR_INVALID_TICKET, 88001234)
    with pytest.raises(ValueError, match="ERR_"):
        m.CloseResult(COMMAND_ID, TRADE_ID, TRACE_ID, False, OK, 88001234)
    # a failed partial close needs no new ticket
    failed = m.CloseResult(
        COMMAND_ID, TRADE_ID, TRACE_ID, False, ErrorCode.ERR_INVALID_TICKET, 88001234, remaining_lots=0.3
    )
    assert failed.new_ticket is None


def test_modify_result_success_matches_error_code() -> None:
    assert m.ModifyResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, 1).success
    assert not m.ModifyResult(COMMAND_ID, TRADE_ID, TRACE_ID, False, ErrorCode.ERR_INVALID_STOPS, 1).success
    for success, code in [(True, ErrorCode.ERR_INVALID_STOPS), (False, OK)]:
        with pytest.raises(ValueError, match="success"):
            m.ModifyResult(COMMAND_ID, TRADE_ID, TRACE_ID, success, code, 1)


def test_other_messages() -> None:
    m.PipeDeliveryAck(COMMAND_ID, TRACE_ID, m.DeliveryStatus.RETRY, "trade context busy")
    with pytest.raises(ValueError, match="command_id"):
        m.PipeDeliveryAck(V4, TRACE_ID, m.DeliveryStatus.OK)
    assert m.Quote("XAUUSD.m", 2398.4, 2398.4, 1).ask == 2398.4  # a zero spread is fine
    with pytest.raises(ValueError, match="below bid"):
        m.Quote("XAUUSD.m", 2398.6, 2398.4, 1)
    with pytest.raises(ValueError, match="bid"):
        m.Quote("XAUUSD.m", 0.0, 2398.4, 1)
    for name in ("ack_timeout_ms", "retry_backoff_ms", "max_retries", "heartbeat_interval_ms"):
        values = {
            "ack_timeout_ms": 1000,
            "retry_backoff_ms": 500,
            "max_retries": 100,
            "heartbeat_interval_ms": 2000,
        }
        with pytest.raises(ValueError, match=name):
            m.DeliveryConfig(**{**values, name: 0})


def test_handshake_rules() -> None:
    hs = m.Handshake("51234567", Role.SLAVE)
    assert hs.protocol_version == 1 and hs.symbols == [] and hs.capabilities == m.Capabilities()
    assert m.PROTOCOL_VERSION == 2
    with pytest.raises(ValueError, match="protocol_version"):
        m.Handshake("51234567", Role.SLAVE, protocol_version=0)
    with pytest.raises(InvalidId, match="account_id"):
        m.Handshake("", Role.MASTER)
    with pytest.raises(ValueError, match="twice"):
        m.Handshake("51234567", Role.SLAVE, 2, symbols=[spec(), spec(canonical_symbol="GOLD")])
    two = m.Handshake("51234567", Role.SLAVE, 2, symbols=[spec(), spec(broker_symbol="XAUUSD")])
    assert len(two.symbols) == 2  # same canonical symbol, different broker symbols: Core decides


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (0, ErrorCode.NO_ERROR),
        (1, ErrorCode.NO_ERROR),
        (2, ErrorCode.ERR_COMMON),
        (128, ErrorCode.ERR_TIMEOUT),
        (129, ErrorCode.ERR_INVALID_PRICE),
        (130, ErrorCode.ERR_INVALID_STOPS),
        (131, ErrorCode.ERR_INVALID_TRADE_VOLUME),
        (132, ErrorCode.ERR_MARKET_CLOSED),
        (133, ErrorCode.ERR_TRADE_DISABLED),
        (134, ErrorCode.ERR_NOT_ENOUGH_MONEY),
        (136, ErrorCode.ERR_OFF_QUOTES),
        (137, ErrorCode.ERR_BROKER_BUSY),
        (138, ErrorCode.ERR_REQUOTE),
        (146, ErrorCode.ERR_TRADE_CONTEXT_BUSY),
        (4106, ErrorCode.ERR_UNKNOWN_SYMBOL),
        (4108, ErrorCode.ERR_INVALID_TICKET),
        (3, ErrorCode.ERR_UNKNOWN),
        (135, ErrorCode.ERR_UNKNOWN),
        (-1, ErrorCode.ERR_UNKNOWN),
        (99999, ErrorCode.ERR_UNKNOWN),
    ],
)
def test_from_mt4(number: int, code: ErrorCode) -> None:
    assert from_mt4(number) is code


def test_mt4_numbers_round_trip() -> None:
    assert MT4_NUMBERS[ErrorCode.NO_ERROR] == 0
    for code, number in MT4_NUMBERS.items():
        assert from_mt4(number) is code
    assert set(MT4_NUMBERS) == set(MT4_ERRORS.values())
    for copier_only in (ErrorCode.ERR_SPEC_MISSING, ErrorCode.ERR_ACCOUNT_OFFLINE, ErrorCode.ERR_DUPLICATE):
        assert copier_only not in MT4_NUMBERS


def test_codes_are_their_own_names() -> None:
    for enum in (ErrorCode, ProtocolError):
        for code in enum:
            assert code.value == code.name
    assert all(c.name.startswith("ERR_PROTOCOL_") for c in ProtocolError)
    assert all(c is ErrorCode.NO_ERROR or c.name.startswith("ERR_") for c in ErrorCode)


def test_side_opposite() -> None:
    assert Side.BUY.opposite is Side.SELL and Side.SELL.opposite is Side.BUY


def test_every_attempt_is_at_least_one() -> None:
    builds = [
        lambda: m.TradeClose(EVENT_ID, TRADE_ID, TRACE_ID, 1, "X", 1.0, 0.0, 1.0, 1, attempt=0),
        lambda: m.TradeModify(EVENT_ID, TRADE_ID, TRACE_ID, 1, "X", 1, attempt=0),
        lambda: m.ExecuteOrder(COMMAND_ID, TRADE_ID, TRACE_ID, "X", Side.BUY, 1.0, 1, "", attempt=0),
        lambda: m.CloseOrder(COMMAND_ID, TRADE_ID, TRACE_ID, 1, "X", 1.0, 1, attempt=0),
        lambda: m.ModifyOrder(COMMAND_ID, TRADE_ID, TRACE_ID, 1, "X", attempt=0),
    ]
    for build in builds:
        with pytest.raises(ValueError, match="attempt"):
            build()


@pytest.mark.parametrize(
    ("trade_id", "trace_id", "words"),
    [
        ("not-a-uuid", "4bf92f3577b34da6a3ce929d0e0e4736", "trade_id must be"),
        ("019ab697-e7fb-7000-8000-00000000004e", "0" * 32, "trace_id must not be all zeros"),
        (["019ab697-e7fb-7000-8000-00000000004e"], "4bf92f3577b34da6a3ce929d0e0e4736", "trade_id must be"),
        ("019ab697-e7fb-7000-8000-00000000004e", None, "trace_id must be"),
    ],
)
def test_a_bad_pair_of_trade_ids_is_refused_every_time_a_good_one_is_remembered(
    trade_id: Any, trace_id: Any, words: str
) -> None:
    good = ("019ab697-e7fb-7000-8000-00000000004e", "4bf92f3577b34da6a3ce929d0e0e4736")
    for _ in range(2):
        with pytest.raises(ValueError, match=words):
            m.CloseOrder("019ab697-e800-726b-b2a7-4e8668192532", trade_id, trace_id, 1, "EURUSD", 0.1, 7)
        m.CloseOrder("019ab697-e800-726b-b2a7-4e8668192532", *good, 1, "EURUSD", 0.1, 7)
