"""The EA line codec: one precise failure per kind of bad line, framing across arbitrary chunk boundaries,
the line length limit, error replies, and hypothesis properties (round trip of every payload type; garbage
and mutated lines never raise)."""

from __future__ import annotations

import itertools
import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from echo.domain import messages as m
from echo.domain.errors import ErrorCode, ProtocolError
from echo.domain.ids import trace_id_from, uuid7
from echo.domain.types import Role, Side, SymbolSpec
from echo.pipe.codec import (
    AGENT_TO_EA,
    EA_TO_AGENT,
    MAX_DEPTH,
    MAX_LINE_BYTES,
    PAYLOADS,
    TYPE_OF,
    Decoded,
    DecodeFailure,
    LineDecoder,
    decode_line,
    encode,
    too_deep,
)

P = ProtocolError
ALL = frozenset(PAYLOADS)
TRADE_ID = uuid7(1764063000000, bytes(range(10)))
EVENT_ID = uuid7(1764063000500, bytes(range(5, 15)))
COMMAND_ID = uuid7(1764063001000, bytes(range(1, 11)))
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
V4_ID = "3f2b8c1e-9a4d-4c6b-8e2f-0d1c2b3a4f5e"


def line(type_: str, payload: dict[str, Any], ts: int = 1764063000000) -> bytes:
    return json.dumps({"type": type_, "timestamp_ms": ts, "payload": payload}).encode()


def intent(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "trade_id": TRADE_ID,
        "trace_id": TRACE_ID,
        "symbol": "XAUUSD.r",
        "side": "BUY",
        "lot_size": 0.1,
        "price": 2398.45,
        "magic_number": 20251125,
        "ticket": 7001001,
    }
    for key, value in changes.items():
        if value is DROP:
            del payload[key]
        else:
            payload[key] = value
    return payload


DROP = object()
HEARTBEAT = line("heartbeat", {"seq": 1})


SPEC = SymbolSpec("XAUUSD.m", "XAUUSD", 2, 0.01, 0.01, 0.01, 100.0, 0.01, 30, 100.0)
OK = ErrorCode.NO_ERROR
EXAMPLES: dict[str, object] = {
    "handshake": m.Handshake("51234567", Role.SLAVE, 2, symbols=[SPEC]),
    "trade_intent": m.TradeIntent(TRADE_ID, TRACE_ID, "XAUUSD.r", Side.BUY, 0.1, 2398.45, 1, 7001001),
    "trade_close": m.TradeClose(
        EVENT_ID, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 0.04, 0.06, 2405.1, 1, 7001077
    ),
    "trade_modify": m.TradeModify(EVENT_ID, TRADE_ID, TRACE_ID, 7001001, "XAUUSD.r", 1, 2390.0, None),
    "trade_intent_ack": m.TradeIntentAck(TRADE_ID, TRACE_ID, m.AckStatus.OK),
    "execute_order": m.ExecuteOrder(COMMAND_ID, TRADE_ID, TRACE_ID, "XAUUSD.m", Side.SELL, 0.05, 1, "echo"),
    "close_order": m.CloseOrder(COMMAND_ID, TRADE_ID, TRACE_ID, 88001234, "XAUUSD.m", 0.05, 1),
    "modify_order": m.ModifyOrder(COMMAND_ID, TRADE_ID, TRACE_ID, 88001234, "XAUUSD.m", 2390.0, 2420.0),
    "execution_result": m.ExecutionResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, ticket=88001234),
    "close_result": m.CloseResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, 88001234, closed_lots=0.05),
    "modify_result": m.ModifyResult(COMMAND_ID, TRADE_ID, TRACE_ID, True, OK, 88001234),
    "pipe_delivery_ack": m.PipeDeliveryAck(COMMAND_ID, TRACE_ID, m.DeliveryStatus.OK),
    "symbol_registration_result": m.SymbolRegistrationResult(
        "51234567", Role.SLAVE, 2, "agent-1", "0.1.0", m.RegistrationStatus.ACCEPTED, 1, EVENT_ID
    ),
    "delivery_config": m.DeliveryConfig(1000, 500, 100, 2000),
    "quotes": m.Quotes([m.Quote("XAUUSD.m", 2398.4, 2398.6, 1)]),
    "state_snapshot": m.StateSnapshot(
        1.0, 1.0, 0.0, 1.0, "USD", 100, [m.Position(1, "X", Side.SELL, 0.1, 1.0, 0)]
    ),
    "heartbeat": m.Heartbeat(1),
    "error": m.ErrorReply("ERR_PROTOCOL_MALFORMED_JSON", "bad"),
}
"""A valid instance of every payload type."""


def fail(raw: bytes, accept: frozenset[str] = EA_TO_AGENT) -> DecodeFailure:
    event = decode_line(raw, accept)
    assert isinstance(event, DecodeFailure), event
    return event


# ------------------------------------------------------------------------------------- one per failure


@pytest.mark.parametrize(
    ("raw", "code", "ref_type", "in_message"),
    [
        (b"GET / HTTP/1.1", P.ERR_PROTOCOL_MALFORMED_JSON, None, "malformed"),
        (b'{"type":"heartbeat",', P.ERR_PROTOCOL_MALFORMED_JSON, None, "truncated"),
        (
            b'{"type":"heartbeat","timestamp_ms":1,"payload":{"seq":NaN}}',
            P.ERR_PROTOCOL_MALFORMED_JSON,
            None,
            "",
        ),
        (HEARTBEAT + b" {}", P.ERR_PROTOCOL_MALFORMED_JSON, None, "trailing"),
        (b"\xef\xbb\xbf" + HEARTBEAT, P.ERR_PROTOCOL_MALFORMED_JSON, None, ""),
        (b"\xff\xfe\x00garbage", P.ERR_PROTOCOL_INVALID_UTF8, None, ""),
        (
            line("error", {"code": "x", "message": "cafe"}).replace(b"cafe", b"caf\xff"),
            P.ERR_PROTOCOL_INVALID_UTF8,
            None,
            "UTF-8",
        ),
        (
            line("trade_intent", intent(symbol="XAUQUSD")).replace(b"XAUQ", b"XAU\xc3("),
            P.ERR_PROTOCOL_INVALID_UTF8,
            None,
            "UTF-8",
        ),
        (b"[1, 2]", P.ERR_PROTOCOL_WRONG_TYPE, None, "array"),
        (b"42", P.ERR_PROTOCOL_WRONG_TYPE, None, "int"),
        (b"null", P.ERR_PROTOCOL_WRONG_TYPE, None, "null"),
        (b"{}", P.ERR_PROTOCOL_MISSING_FIELD, None, "`type`"),
        (b'{"timestamp_ms":1,"payload":{}}', P.ERR_PROTOCOL_MISSING_FIELD, None, "`type`"),
        (line("trade_open", {}), P.ERR_PROTOCOL_UNKNOWN_TYPE, "trade_open", "trade_open"),
        (b'{"type":"heartbeat","payload":{}}', P.ERR_PROTOCOL_MISSING_FIELD, "heartbeat", "timestamp_ms"),
        (b'{"type":"heartbeat","timestamp_ms":1}', P.ERR_PROTOCOL_MISSING_FIELD, "heartbeat", "payload"),
        (
            line("trade_intent", intent(lot_size=DROP)),
            P.ERR_PROTOCOL_MISSING_FIELD,
            "trade_intent",
            "lot_size",
        ),
        (
            line("handshake", {"account_id": "1", "role": "slave", "symbols": [{"broker_symbol": "X"}]}),
            P.ERR_PROTOCOL_MISSING_FIELD,
            "handshake",
            "canonical_symbol",
        ),
        (
            b'{"type":"heartbeat","timestamp_ms":"1","payload":{}}',
            P.ERR_PROTOCOL_WRONG_TYPE,
            "heartbeat",
            "timestamp_ms",
        ),
        (
            b'{"type":"heartbeat","timestamp_ms":1.0,"payload":{}}',
            P.ERR_PROTOCOL_WRONG_TYPE,
            "heartbeat",
            "timestamp_ms",
        ),
        (
            b'{"type":"heartbeat","timestamp_ms":1,"payload":[]}',
            P.ERR_PROTOCOL_WRONG_TYPE,
            "heartbeat",
            "payload",
        ),
        (line("trade_intent", intent(lot_size="0.1")), P.ERR_PROTOCOL_WRONG_TYPE, "trade_intent", "lot_size"),
        (line("trade_intent", intent(ticket=7001001.0)), P.ERR_PROTOCOL_WRONG_TYPE, "trade_intent", "ticket"),
        (line("trade_intent", intent(ticket=True)), P.ERR_PROTOCOL_WRONG_TYPE, "trade_intent", "ticket"),
        (line("trade_intent", intent(price=None)), P.ERR_PROTOCOL_WRONG_TYPE, "trade_intent", "price"),
        (line("trade_intent", intent(attempt=None)), P.ERR_PROTOCOL_WRONG_TYPE, "trade_intent", "attempt"),
        (
            line("trade_intent", intent(trade_id=V4_ID)),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "trade_intent",
            "UUIDv7",
        ),
        (
            line("trade_intent", intent(trade_id=TRADE_ID.upper())),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "trade_intent",
            "trade_id",
        ),
        (
            line("trade_intent", intent(trace_id="0" * 32)),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "trade_intent",
            "trace_id",
        ),
        (
            line("trade_intent", intent(lot_size=-0.1)),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "trade_intent",
            "lot_size",
        ),
        (
            line("trade_intent", intent(lot_size=12345.5)).replace(b"12345.5", b"1e400"),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "trade_intent",
            "lot_size",
        ),
        (line("trade_intent", intent(side="LONG")), P.ERR_PROTOCOL_INVALID_VALUE, "trade_intent", "side"),
        (line("trade_intent", intent(symbol="")), P.ERR_PROTOCOL_INVALID_VALUE, "trade_intent", "symbol"),
        (line("trade_intent", intent(attempt=0)), P.ERR_PROTOCOL_INVALID_VALUE, "trade_intent", "attempt"),
        (
            line("trade_intent", intent(stop_loss=-1)),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "trade_intent",
            "stop_loss",
        ),
        (
            line(
                "trade_close",
                {
                    **intent(side=DROP, price=DROP),
                    "event_id": EVENT_ID,
                    "lot_size": 0.05,
                    "remaining_lots": 0.05,
                    "price": 2401.0,
                },
            ),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "trade_close",
            "new_ticket",
        ),
        (
            line("handshake", {"account_id": "a b", "role": "slave"}),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "handshake",
            "account_id",
        ),
        (
            line("handshake", {"account_id": "1", "role": "boss"}),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "handshake",
            "role",
        ),
        (
            line("quotes", {"quotes": [{"symbol": "X", "bid": 3, "ask": 2, "time_ms": 1}]}),
            P.ERR_PROTOCOL_INVALID_VALUE,
            "quotes",
            "ask",
        ),
        (
            line(
                "execute_order", {**intent(price=DROP, ticket=DROP), "command_id": COMMAND_ID, "comment": ""}
            ),
            P.ERR_PROTOCOL_UNEXPECTED_MESSAGE,
            "execute_order",
            "direction",
        ),
    ],
)
def test_each_bad_line_gets_one_precise_failure(
    raw: bytes, code: ProtocolError, ref_type: str | None, in_message: str
) -> None:
    failure = fail(raw)
    assert failure.code is code, failure
    assert failure.ref_type == ref_type
    assert in_message.lower() in failure.message.lower()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_each_type_is_accepted_in_its_directions_only(name: str) -> None:
    raw = encode(EXAMPLES[name], 1)[:-1]
    for accept in (EA_TO_AGENT, AGENT_TO_EA):
        event = decode_line(raw, accept)
        if name in accept:
            assert isinstance(event, Decoded) and event.type == name
        else:
            assert isinstance(event, DecodeFailure)
            assert event.code is P.ERR_PROTOCOL_UNEXPECTED_MESSAGE and event.ref_type == name


def test_a_message_names_the_path_of_the_bad_field() -> None:
    failure = fail(line("quotes", {"quotes": [{"symbol": "X", "bid": 1, "ask": "2", "time_ms": 1}]}))
    assert failure.code is P.ERR_PROTOCOL_WRONG_TYPE
    assert "$.payload.quotes[0].ask" in failure.message and "quotes" in failure.message


def test_session_rule_lines_are_not_codec_failures() -> None:
    """NOT_HANDSHAKEN and VERSION_UNSUPPORTED are the Agent's session rules: the codec accepts these lines."""
    assert isinstance(decode_line(line("trade_intent", intent()), EA_TO_AGENT), Decoded)
    hs = decode_line(
        line("handshake", {"account_id": "1", "role": "master", "protocol_version": 99}), EA_TO_AGENT
    )
    assert isinstance(hs, Decoded) and hs.payload.protocol_version == 99


def test_forward_compatibility_and_duplicate_keys() -> None:
    raw = b'{"payload":{"seq":1,"uptime_s":8,"seq":5},"extra":{"a":[1]},"timestamp_ms":7,"type":"heartbeat"}'
    event = decode_line(raw, EA_TO_AGENT)
    assert event == Decoded("heartbeat", 7, m.Heartbeat(5))


def test_optional_fields_take_their_defaults() -> None:
    event = decode_line(line("handshake", {"account_id": "51234567", "role": "slave"}), EA_TO_AGENT)
    assert isinstance(event, Decoded)
    assert event.payload == m.Handshake(account_id="51234567", role=Role.SLAVE)
    assert event.payload.protocol_version == 1


def test_heartbeat_and_error_travel_both_ways() -> None:
    for accept in (EA_TO_AGENT, AGENT_TO_EA):
        assert isinstance(decode_line(HEARTBEAT, accept), Decoded)
        assert isinstance(decode_line(line("error", {"code": "c", "message": "m"}), accept), Decoded)
    assert EA_TO_AGENT | AGENT_TO_EA == ALL


# -------------------------------------------------------------------------------------------- framing


def _decoded(events: list[Any]) -> list[Decoded]:
    assert all(isinstance(e, Decoded) for e in events), events
    return events


def test_crlf_and_blank_lines() -> None:
    dec = LineDecoder(EA_TO_AGENT)
    events = dec.feed(b"\n\r\n   \t\r\n" + HEARTBEAT + b"\r\n\n" + HEARTBEAT.replace(b"1}", b"2}") + b"\n")
    assert [e.payload.seq for e in _decoded(events)] == [1, 2]
    assert dec.buffered == 0


def test_a_partial_line_waits_for_its_newline() -> None:
    dec = LineDecoder(EA_TO_AGENT)
    assert dec.feed(HEARTBEAT[:10]) == []
    assert dec.buffered == 10
    assert dec.feed(HEARTBEAT[10:]) == []
    assert len(_decoded(dec.feed(b"\r\n"))) == 1
    assert dec.buffered == 0


def test_failures_do_not_stop_the_stream() -> None:
    dec = LineDecoder(EA_TO_AGENT)
    events = dec.feed(b"garbage\n" + HEARTBEAT + b"\n[1]\n" + HEARTBEAT + b"\n")
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["DecodeFailure", "Decoded", "DecodeFailure", "Decoded"]


LINES = [
    HEARTBEAT,
    line("trade_intent", intent()),
    b"not json",
    line("handshake", {"account_id": "1", "role": "master", "symbol_mappings": {"DE30.cash": "GER30"}}),
    b"",
    line("quotes", {"quotes": [{"symbol": "XAUUSD.m", "bid": 1.5, "ask": 1.75, "time_ms": 3}]}) + b"\r",
]
STREAM = b"".join(x + b"\n" for x in LINES)


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=40))
def test_any_chunking_yields_the_same_events(cuts: list[int]) -> None:
    expected = LineDecoder(EA_TO_AGENT).feed(STREAM)
    assert len(expected) == 5
    dec = LineDecoder(EA_TO_AGENT)
    events = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for a, b in itertools.pairwise(bounds):
        events += dec.feed(STREAM[a:b])
    assert events == expected
    assert dec.buffered == 0


def test_byte_by_byte() -> None:
    dec = LineDecoder(EA_TO_AGENT)
    events = [e for i in range(len(STREAM)) for e in dec.feed(STREAM[i : i + 1])]
    assert events == LineDecoder(EA_TO_AGENT).feed(STREAM)


# ------------------------------------------------------------------------------------- line length limit


def _too_long(events: list[Any]) -> int:
    return sum(isinstance(e, DecodeFailure) and e.code is P.ERR_PROTOCOL_LINE_TOO_LONG for e in events)


def test_a_10mb_line_is_reported_once_without_buffering_it() -> None:
    dec = LineDecoder(EA_TO_AGENT)
    assert MAX_LINE_BYTES == 1 << 20
    chunk = b"x" * 65536
    events = []
    for _ in range(10 * 1024 * 1024 // len(chunk)):
        events += dec.feed(chunk)
        assert dec.buffered <= MAX_LINE_BYTES
    events += dec.feed(b"tail of the long line\n" + HEARTBEAT + b"\n")
    assert _too_long(events) == 1
    assert len(events) == 2 and isinstance(events[1], Decoded)
    assert dec.buffered == 0


def test_a_10mb_line_in_one_chunk() -> None:
    dec = LineDecoder(EA_TO_AGENT)
    events = dec.feed(b"{" * (10 * 1024 * 1024))
    assert dec.buffered <= MAX_LINE_BYTES
    events += dec.feed(b"}\n" + HEARTBEAT + b"\n")
    assert _too_long(events) == 1 and isinstance(events[-1], Decoded) and len(events) == 2
    events = LineDecoder(EA_TO_AGENT).feed(b"[" * (10 * 1024 * 1024) + b"\n" + HEARTBEAT + b"\n")
    assert _too_long(events) == 1 and isinstance(events[-1], Decoded) and len(events) == 2


def test_the_limit_is_inclusive() -> None:
    limit = 200
    exact = HEARTBEAT + b" " * (limit - len(HEARTBEAT))
    assert len(exact) == limit
    assert len(_decoded(LineDecoder(EA_TO_AGENT, limit).feed(exact + b"\n"))) == 1
    over = LineDecoder(EA_TO_AGENT, limit)
    events = over.feed(exact + b" \n" + HEARTBEAT + b"\n")
    assert _too_long(events) == 1 and isinstance(events[1], Decoded)
    assert "200 bytes" in events[0].message


@settings(max_examples=100, deadline=None)
@given(size=st.integers(65, 400), cuts=st.lists(st.integers(0, 500), max_size=12))
def test_long_lines_in_any_chunking(size: int, cuts: list[int]) -> None:
    limit = 64
    short = b'{"type":"heartbeat","timestamp_ms":1,"payload":{}}'
    data = b"y" * size + b"\n" + short + b"\n"
    dec = LineDecoder(EA_TO_AGENT, limit)
    events = []
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    for a, b in itertools.pairwise(bounds):
        events += dec.feed(data[a:b])
        assert dec.buffered <= limit
    assert _too_long(events) == 1
    assert isinstance(events[-1], Decoded) and len(events) == 2


# ------------------------------------------------------------------------------------------ error replies


def test_reply_is_a_decodable_error_line() -> None:
    failure = fail(line("trade_intent", intent(lot_size=-1)))
    reply = failure.reply(1764063000123)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1
    for accept in (AGENT_TO_EA, EA_TO_AGENT):
        event = decode_line(reply[:-1], accept)
        assert isinstance(event, Decoded) and event.type == "error"
        assert event.timestamp_ms == 1764063000123
        assert event.payload == m.ErrorReply(failure.code.value, failure.message, "trade_intent")


def test_reply_without_ref_type_and_with_newlines_in_the_message() -> None:
    failure = DecodeFailure(P.ERR_PROTOCOL_LINE_TOO_LONG, "two\nlines \u00e9")
    reply = failure.reply(5)
    assert reply.count(b"\n") == 1
    event = decode_line(reply[:-1], AGENT_TO_EA)
    assert isinstance(event, Decoded) and event.payload == m.ErrorReply(
        "ERR_PROTOCOL_LINE_TOO_LONG", "two\nlines é"
    )


def test_encode_writes_the_envelope() -> None:
    out = encode(m.Heartbeat(3), 42)
    assert json.loads(out) == {"type": "heartbeat", "timestamp_ms": 42, "payload": {"seq": 3}}
    assert set(TYPE_OF) == set(PAYLOADS.values())


# ----------------------------------------------------------------------------- hypothesis: round trip

ints64 = st.integers(-(2**63), 2**63 - 1)
non_neg = st.integers(0, 2**63 - 1)
ms = st.integers(0, 2**48 - 1)
ids = st.builds(uuid7, ms, st.binary(min_size=10, max_size=10))
traces = st.binary(min_size=16, max_size=16).map(trace_id_from)
tickets = st.integers(1, 2**63 - 1)
text = st.text(st.characters(codec="utf-8"), max_size=40)
symbols = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")),
    min_size=1,
    max_size=32,
).filter(str.isprintable)
floats = st.floats(allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False)
prices = st.none() | non_negative
opt_floats = st.none() | floats
errors = st.sampled_from([c for c in ErrorCode if c is not ErrorCode.NO_ERROR])
accounts = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=64)
sides = st.sampled_from(Side)
attempts = st.integers(1, 2**31)
roles = st.sampled_from(Role)


@st.composite
def symbol_specs(draw: st.DrawFn) -> SymbolSpec:
    lo, hi = sorted((draw(positive), draw(positive)))
    return SymbolSpec(
        broker_symbol=draw(symbols),
        canonical_symbol=draw(symbols),
        digits=draw(st.integers(0, 10)),
        point=draw(positive),
        tick_size=draw(positive),
        min_lot=lo,
        max_lot=hi,
        lot_step=draw(positive),
        stop_level=draw(st.integers(0, 1_000_000)),
        contract_size=draw(prices),
        tick_value=draw(prices),
    )


@st.composite
def quotes(draw: st.DrawFn) -> m.Quote:
    bid, ask = sorted((draw(positive), draw(positive)))
    return m.Quote(draw(symbols), bid, ask, draw(ints64))


@st.composite
def trade_closes(draw: st.DrawFn) -> m.TradeClose:
    remaining = draw(st.just(0.0) | positive)
    new_ticket = draw(tickets) if remaining > 0 else draw(st.none() | tickets)
    return m.TradeClose(
        draw(ids),
        draw(ids),
        draw(traces),
        draw(tickets),
        draw(symbols),
        draw(positive),
        remaining,
        draw(positive),
        draw(non_neg),
        new_ticket,
        draw(attempts),
    )


@st.composite
def close_results(draw: st.DrawFn) -> m.CloseResult:
    success = draw(st.booleans())
    remaining = draw(non_negative)
    new_ticket = draw(tickets) if success and remaining > 0 else draw(st.none() | tickets)
    return m.CloseResult(
        draw(ids),
        draw(ids),
        draw(traces),
        success,
        ErrorCode.NO_ERROR if success else draw(errors),
        draw(tickets),
        draw(non_negative),
        draw(prices),
        new_ticket,
        remaining,
        draw(ints64),
        draw(text),
    )


issues = st.builds(m.RegistrationIssue, text, text, st.dictionaries(text, text, max_size=2))
registration_status = st.sampled_from(m.RegistrationStatus)

STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "handshake": st.builds(
        m.Handshake,
        account_id=accounts,
        role=roles,
        protocol_version=st.integers(1, 2**31),
        client_semver=text,
        client_id=text,
        broker=text,
        terminal_build=st.none() | ints64,
        capabilities=st.builds(m.Capabilities, st.lists(text, max_size=3), st.lists(text, max_size=3)),
        symbols=st.lists(symbol_specs(), max_size=3, unique_by=lambda s: s.broker_symbol),
        symbol_mappings=st.dictionaries(symbols, symbols, max_size=3),
    ),
    "trade_intent": st.builds(
        m.TradeIntent,
        trade_id=ids,
        trace_id=traces,
        symbol=symbols,
        side=sides,
        lot_size=positive,
        price=positive,
        magic_number=non_neg,
        ticket=tickets,
        stop_loss=prices,
        take_profit=prices,
        attempt=attempts,
        strategy_id=text,
        comment=text,
        opened_at_ms=st.none() | ints64,
    ),
    "trade_close": trade_closes(),
    "trade_modify": st.builds(
        m.TradeModify, ids, ids, traces, tickets, symbols, non_neg, prices, prices, attempts
    ),
    "trade_intent_ack": st.builds(
        m.TradeIntentAck,
        ids,
        traces,
        st.sampled_from(m.AckStatus),
        st.none() | ids,
        st.sampled_from(ErrorCode),
        text,
    ),
    "execute_order": st.builds(
        m.ExecuteOrder,
        command_id=ids,
        trade_id=ids,
        trace_id=traces,
        symbol=symbols,
        side=sides,
        lot_size=positive,
        magic_number=non_neg,
        comment=st.text(st.characters(codec="utf-8"), max_size=31),
        stop_loss=prices,
        take_profit=prices,
        master_price=prices,
        max_slippage_points=prices,
        max_spread_points=prices,
        attempt=attempts,
    ),
    "close_order": st.builds(m.CloseOrder, ids, ids, traces, tickets, symbols, positive, non_neg, attempts),
    "modify_order": st.builds(m.ModifyOrder, ids, ids, traces, tickets, symbols, prices, prices, attempts),
    "execution_result": st.one_of(
        st.builds(
            m.ExecutionResult,
            ids,
            ids,
            traces,
            st.just(True),
            st.just(ErrorCode.NO_ERROR),
            tickets,
            prices,
            st.none() | positive,
            st.none() | ints64,
            ints64,
            text,
        ),
        st.builds(
            m.ExecutionResult,
            ids,
            ids,
            traces,
            st.just(False),
            errors,
            st.none() | tickets,
            prices,
            st.none() | positive,
            st.none() | ints64,
            ints64,
            text,
        ),
    ),
    "close_result": close_results(),
    "modify_result": st.one_of(
        st.builds(
            m.ModifyResult,
            ids,
            ids,
            traces,
            st.just(True),
            st.just(ErrorCode.NO_ERROR),
            tickets,
            prices,
            prices,
            ints64,
            text,
        ),
        st.builds(
            m.ModifyResult, ids, ids, traces, st.just(False), errors, tickets, prices, prices, ints64, text
        ),
    ),
    "pipe_delivery_ack": st.builds(m.PipeDeliveryAck, ids, traces, st.sampled_from(m.DeliveryStatus), text),
    "symbol_registration_result": st.builds(
        m.SymbolRegistrationResult,
        account_id=accounts,
        pipe_role=roles,
        protocol_version=ints64,
        agent_id=text,
        core_version=text,
        status=registration_status,
        evaluated_at_ms=ints64,
        evaluation_id=ids,
        errors=st.lists(issues, max_size=2),
        warnings=st.lists(issues, max_size=2),
        symbols=st.lists(
            st.builds(
                m.SymbolRegistrationEntry,
                symbols,
                symbols,
                registration_status,
                st.lists(issues, max_size=1),
                st.lists(issues, max_size=1),
                ints64,
                ints64,
            ),
            max_size=3,
        ),
    ),
    "delivery_config": st.builds(m.DeliveryConfig, *(st.integers(1, 2**63 - 1) for _ in range(4))),
    "quotes": st.builds(m.Quotes, st.lists(quotes(), max_size=4)),
    "state_snapshot": st.builds(
        m.StateSnapshot,
        floats,
        floats,
        floats,
        floats,
        text,
        ints64,
        st.lists(
            st.builds(
                m.Position,
                tickets,
                symbols,
                sides,
                floats,
                floats,
                non_neg,
                text,
                opt_floats,
                opt_floats,
                st.none() | ints64,
                floats,
            ),
            max_size=3,
        ),
        st.lists(st.builds(m.TickValue, symbols, floats), max_size=3),
    ),
    "heartbeat": st.builds(m.Heartbeat, ints64),
    "error": st.builds(m.ErrorReply, text, text, st.none() | text),
}


def test_there_is_a_strategy_for_every_payload_type() -> None:
    assert set(STRATEGIES) == set(PAYLOADS)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), ts=st.integers(0, 2**63 - 1))
def test_round_trip(name: str, data: st.DataObject, ts: int) -> None:
    payload = data.draw(STRATEGIES[name])
    out = encode(payload, ts)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    accept = EA_TO_AGENT if name in EA_TO_AGENT else AGENT_TO_EA
    event = decode_line(out[:-1], accept)
    assert event == Decoded(name, ts, payload)


# ------------------------------------------------------------------------ hypothesis: never raises


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=10), limit=st.integers(8, 200)
)
def test_garbage_in_random_chunks_never_raises(data: bytes, cuts: list[int], limit: int) -> None:
    dec = LineDecoder(EA_TO_AGENT, limit)
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    for a, b in itertools.pairwise(bounds):
        for event in dec.feed(data[a:b]):
            assert isinstance(event, Decoded | DecodeFailure)
        assert dec.buffered <= limit


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | floats | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
VALID_LINES = [encode(p, 1764063000000)[:-1] for p in EXAMPLES.values()]


def _mutate_json(obj: Any, data: st.DataObject) -> Any:
    """Delete a key or replace a value somewhere in the object."""
    if isinstance(obj, dict) and obj:
        key = data.draw(st.sampled_from(sorted(obj)))
        action = data.draw(st.sampled_from(["delete", "replace", "descend"]))
        if action == "delete":
            return {k: v for k, v in obj.items() if k != key}
        if action == "replace":
            return {**obj, key: data.draw(json_values)}
        return {**obj, key: _mutate_json(obj[key], data)}
    if isinstance(obj, list) and obj:
        i = data.draw(st.integers(0, len(obj) - 1))
        return [*obj[:i], _mutate_json(obj[i], data), *obj[i + 1 :]]
    return data.draw(json_values)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_valid_lines_never_raise(data: st.DataObject) -> None:
    raw = data.draw(st.sampled_from(VALID_LINES))
    how = data.draw(st.sampled_from(["flip", "json"]))
    if how == "flip":
        buf = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4))):
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
        mutated = bytes(buf)
    else:
        obj = json.loads(raw)
        for _ in range(data.draw(st.integers(1, 3))):
            obj = _mutate_json(obj, data)
        mutated = json.dumps(obj).encode()
    for accept in (EA_TO_AGENT, AGENT_TO_EA, ALL):
        event = decode_line(mutated, accept)
        assert isinstance(event, Decoded | DecodeFailure)
        if isinstance(event, DecodeFailure):
            # every failure can be answered
            assert isinstance(decode_line(event.reply(1)[:-1], AGENT_TO_EA), Decoded)


# ------------------------------------------------------------------------------ gaps found and closed


def test_invalid_utf8_anywhere_in_the_line_is_refused() -> None:
    raw = b'{"type":"heartbeat","timestamp_ms":1,"payload":{"seq":1,"note":"\xff"}}'
    assert fail(raw).code is P.ERR_PROTOCOL_INVALID_UTF8


def test_integers_beyond_int64_are_refused() -> None:
    assert fail(line("heartbeat", {"seq": 2**64})).code is P.ERR_PROTOCOL_INVALID_VALUE


# ------------------------------------------------------------- depth, huge numbers, long strings


def _nest(depth: int, kinds: str, leaf: bytes = b"1") -> bytes:
    """``depth`` levels of arrays/objects (``kinds`` picks each level's kind in turn) around ``leaf``."""
    opened, closed = [], []
    for i in range(depth):
        if kinds[i % len(kinds)] == "[":
            opened.append(b"[")
            closed.append(b"]")
        else:
            opened.append(b'{"k":')
            closed.append(b"}")
    return b"".join(opened) + leaf + b"".join(reversed(closed))


def _in_heartbeat(value: bytes) -> bytes:
    return b'{"type":"heartbeat","timestamp_ms":1,"payload":{"seq":1,"extra":' + value + b"}}"


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("kinds", ["{", "[", "[{"])
def test_deep_nesting_is_refused_precisely_before_any_decoder_reads_it(depth: int, kinds: str) -> None:
    for raw in (_nest(depth, kinds), _in_heartbeat(_nest(depth, kinds))):
        for accept in (EA_TO_AGENT, AGENT_TO_EA):
            failure = fail(raw, accept)
            assert failure.code is P.ERR_PROTOCOL_TOO_DEEP, failure
            assert str(MAX_DEPTH) in failure.message
            assert isinstance(decode_line(failure.reply(1)[:-1], AGENT_TO_EA), Decoded)
    dec = LineDecoder(EA_TO_AGENT)
    events = dec.feed(_in_heartbeat(_nest(depth, kinds)) + b"\n" + HEARTBEAT + b"\n")
    assert [getattr(e, "code", None) for e in events] == [P.ERR_PROTOCOL_TOO_DEEP, None]


def test_the_depth_limit_is_inclusive_and_ignores_brackets_in_strings() -> None:
    at_limit = _in_heartbeat(_nest(MAX_DEPTH - 2, "[{"))  # envelope + payload + the rest
    assert decode_line(at_limit, EA_TO_AGENT) == Decoded("heartbeat", 1, m.Heartbeat(1))
    assert fail(_in_heartbeat(_nest(MAX_DEPTH - 1, "[{"))).code is P.ERR_PROTOCOL_TOO_DEEP
    brackets = json.dumps("[{" * 5000 + '\\"[[[').encode()
    assert decode_line(_in_heartbeat(brackets), EA_TO_AGENT) == Decoded("heartbeat", 1, m.Heartbeat(1))
    assert fail(b'{"a":"' + b"[" * 5000).code is P.ERR_PROTOCOL_MALFORMED_JSON  # unterminated string


def test_every_message_of_the_protocol_fits_well_inside_the_depth_limit() -> None:
    for raw in VALID_LINES:
        assert not too_deep(raw, 5), raw


@settings(max_examples=150, deadline=None)
@given(
    depth=st.integers(1, 3000),
    kinds=st.text(alphabet="[{", min_size=1, max_size=4),
    where=st.sampled_from(["bare", "heartbeat", "handshake", "truncated"]),
)
def test_any_nesting_is_decoded_or_refused_never_raised(depth: int, kinds: str, where: str) -> None:
    value = _nest(depth, kinds)
    raw = {
        "bare": value,
        "heartbeat": _in_heartbeat(value),
        "handshake": line("handshake", {"account_id": "1", "role": "slave"})[:-2] + b',"x":' + value + b"}}",
        "truncated": _in_heartbeat(value)[: len(value) // 2 + 40],
    }[where]
    for accept in (EA_TO_AGENT, AGENT_TO_EA):
        event = decode_line(raw, accept)
        assert isinstance(event, Decoded | DecodeFailure)
        if depth + (2 if where != "bare" else 0) > MAX_DEPTH and where != "truncated":
            assert isinstance(event, DecodeFailure) and event.code is P.ERR_PROTOCOL_TOO_DEEP


@settings(max_examples=150, deadline=None)
@given(
    digits=st.integers(19, 200_000),
    sign=st.sampled_from(["", "-"]),
    tail=st.sampled_from(["", ".5", "e999999", "e-999999", ".0e308"]),
    field=st.sampled_from(["seq", "extra"]),
)
def test_huge_numbers_are_refused_or_skipped_never_raised(
    digits: int, sign: str, tail: str, field: str
) -> None:
    number = (sign + "9" * digits + tail).encode()
    raw = (
        b'{"type":"heartbeat","timestamp_ms":1,"payload":{"seq":1,"' + field.encode() + b'":' + number + b"}}"
    )
    event = decode_line(raw, EA_TO_AGENT)
    assert isinstance(event, Decoded | DecodeFailure)
    if field == "seq":
        assert isinstance(event, DecodeFailure)
    for ts in (number, b"1e400"):
        bad_ts = b'{"type":"heartbeat","timestamp_ms":' + ts + b',"payload":{"seq":1}}'
        assert isinstance(decode_line(bad_ts, EA_TO_AGENT), DecodeFailure)


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(10_000, MAX_LINE_BYTES - 200),
    char=st.sampled_from(["x", "\\u00e9", "\\\\", '\\"', "[", "{", "é"]),
    field=st.sampled_from(["symbol", "comment", "unknown"]),
)
def test_long_strings_are_decoded_or_refused_never_raised(size: int, char: str, field: str) -> None:
    text = char * max(1, size // 2 // len(char))  # whole JSON escapes only
    body = line("trade_intent", intent(**{field: "@@"})).replace(b'"@@"', b'"' + text.encode() + b'"')
    event = decode_line(body, EA_TO_AGENT)
    assert isinstance(event, Decoded | DecodeFailure)
    if field == "symbol":
        assert isinstance(event, DecodeFailure) and event.code is P.ERR_PROTOCOL_INVALID_VALUE, event
    else:
        assert isinstance(event, Decoded), event
    if isinstance(event, DecodeFailure):
        assert len(event.message) <= 500
    events = LineDecoder(EA_TO_AGENT).feed(body + b"\n")
    assert len(events) == 1


def test_a_handshake_carries_a_terminal_id_and_a_token_checked_by_the_codec() -> None:
    hs = {"account_id": "51001", "role": "slave", "terminal_id": "0123456789abcdef" * 2, "token": "t"}
    event = decode_line(line("handshake", hs), EA_TO_AGENT)
    assert isinstance(event, Decoded) and event.payload.terminal_id == hs["terminal_id"]
    for bad in ({"terminal_id": "short"}, {"terminal_id": "x y" * 8}, {"token": "t" * 257}):
        failure = fail(line("handshake", {**hs, **bad}))
        assert failure.code is P.ERR_PROTOCOL_INVALID_VALUE and next(iter(bad)) in failure.message
