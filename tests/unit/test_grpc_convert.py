"""Domain messages through the split-mode contracts and back: every EA message type in every envelope,
through the protobuf wire format (the codec's strategies generate the messages)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb
from echo.adapters.transport.pb.echo.v1 import common_pb2 as cpb
from echo.adapters.transport.pb.echo.v1 import trade_pb2 as tpb
from echo.domain import messages as m
from tests.unit.test_codec import STRATEGIES

FROM_EA = sorted(conv.FROM_EA.values())
TO_EA = sorted(conv.TO_EA.values())


def wire_agent(msg: m.AgentToCore) -> m.AgentToCore:
    wire = conv.agent_message(msg).SerializeToString()
    return conv.agent_message_from_pb(pb.AgentMessage.FromString(wire), "agent-1")


def wire_core(msg: m.CoreToAgent) -> m.CoreToAgent:
    return conv.core_message_from_pb(pb.CoreMessage.FromString(conv.core_message(msg).SerializeToString()))


@pytest.mark.parametrize("name", FROM_EA)
@given(data=st.data())
def test_ea_messages_from_the_agent_round_trip(name: str, data: st.DataObject) -> None:
    payload: Any = data.draw(STRATEGIES[name])
    msg = m.FromAccount("51001", payload, 1_764_063_000_000)
    assert wire_agent(msg) == msg


@pytest.mark.parametrize("name", TO_EA)
@given(data=st.data())
def test_messages_for_terminals_round_trip(name: str, data: st.DataObject) -> None:
    msg = m.ToAccount("51001", data.draw(STRATEGIES[name]))
    assert wire_core(msg) == msg


@given(st.data())
def test_handshakes_round_trip_as_account_reports(data: st.DataObject) -> None:
    hs = data.draw(STRATEGIES["handshake"])
    msg = m.AccountOnline("agent-1", hs, 1_764_063_000_000)
    assert wire_agent(msg) == msg


_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_traceparent_crosses_the_wire_and_an_oversized_one_is_dropped() -> None:
    trade = "019aba5a-2020-7f41-92c4-bef4365ac2e5"
    intent = m.TradeIntentAck(trade, "0af7651916cd43dd8448eb211c80319c", m.AckStatus.OK)
    to_slave = m.ToAccount("51001", intent, _TRACEPARENT)
    assert wire_core(to_slave) == to_slave
    assert wire_core(m.ToAccount("51001", intent, "0" * 56)).traceparent == ""
    quotes: Any = m.Quotes([])
    from_master = m.FromAccount("9001", quotes, 5, _TRACEPARENT)
    assert wire_agent(from_master) == from_master
    assert isinstance(got := wire_agent(m.FromAccount("9001", quotes, 5, "x" * 4000)), m.FromAccount)
    assert got.traceparent == ""


def test_the_other_envelopes_round_trip() -> None:
    for agent_side in (
        m.AccountOffline("agent-1", "51001", 5),
        m.CommandAck(
            "51001", "019aba5a-2020-7f41-92c4-bef4365ac2e5", m.AckStage.PIPE_DELIVERED, m.AckResult.OK
        ),
    ):
        assert wire_agent(agent_side) == agent_side
    for core_side in (
        m.DropCommand("51001", "019aba5a-2020-7f41-92c4-bef4365ac2e5", "gave up"),
        m.DeliveryHeartbeat(m.DeliveryConfig(1000, 500, 100, 2000)),
    ):
        assert wire_core(core_side) == core_side


def test_a_peer_message_that_breaks_domain_rules_is_a_convert_error() -> None:
    bad = pb.AgentMessage(
        from_account=pb.FromAccount(
            account_id="51001", quotes=tpb.Quotes(quotes=[tpb.Quote(symbol="X", bid=-1, ask=1)])
        )
    )
    with pytest.raises(conv.ConvertError, match="bid"):
        conv.agent_message_from_pb(bad, "agent-1")
    with pytest.raises(conv.ConvertError):
        conv.agent_message_from_pb(pb.AgentMessage(), "agent-1")


def test_an_enum_number_this_side_does_not_know_is_a_convert_error() -> None:
    """proto3 enums are open: a newer peer's number parses, and stops at the conversion."""
    order = tpb.ExecuteOrder(
        command_id="019aba5a-2020-7f41-92c4-bef4365ac2e5", trade_id="019aba5a-1ff8-7d3b-a4ea-07b39d1963fe",
        trace_id="e140a19ce1a2d94cc9cae6c506bd55c0", symbol="XAUUSD", lot_size=0.1,
        side=cpb.ORDER_SIDE_BUY, attempt=1,
    )  # fmt: skip
    ok = pb.CoreMessage(to_account=pb.ToAccount(account_id="51001", execute_order=order))
    assert isinstance(conv.core_message_from_pb(ok), m.ToAccount)
    for side in (cpb.ORDER_SIDE_UNSPECIFIED, 7):
        order.side = side
        wire = pb.CoreMessage(to_account=pb.ToAccount(account_id="51001", execute_order=order))
        with pytest.raises(conv.ConvertError, match="side"):
            conv.core_message_from_pb(pb.CoreMessage.FromString(wire.SerializeToString()))


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_garbage_from_a_peer_is_a_convert_error_or_a_valid_message(data: bytes) -> None:
    """Bytes that decode at all (an enum number this side does not know, a message with its required
    parts unset) become a domain message or a ConvertError, which the stream logs and skips; nothing else
    escapes."""
    for parse, convert in (
        (pb.AgentMessage.FromString, lambda msg: conv.agent_message_from_pb(msg, "agent-1")),
        (pb.CoreMessage.FromString, conv.core_message_from_pb),
    ):
        try:
            msg = parse(data)
        except Exception:
            continue  # undecodable bytes end the stream (logged as grpc_bad_agent_stream)
        with contextlib.suppress(conv.ConvertError):
            convert(msg)


# ------------------------------------------------------------------ what a peer's bytes may be


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, body: bytes = b"") -> bytes:
    return _varint(number << 3 | wire) + body


def _len_delim(number: int, body: bytes) -> bytes:
    return _field(number, 2, _varint(len(body)) + body)


UNKNOWN_VARINT = _field(99, 0, _varint(5))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (_field(99, 3) * 100_000 + _field(99, 4) * 100_000, "wire type 3"),
        (UNKNOWN_VARINT * 500_000, "more than 64 unknown fields"),
        (_len_delim(2, UNKNOWN_VARINT * 65), "more than 64 unknown fields"),  # inside account_online
        (_len_delim(1, b"x" * (5 << 20)), "bytes (at most"),
        (_field(2, 2, _varint(1000)) + b"ab", "beyond the end"),
        (_field(1, 0) + b"\xff" * 11, "varint"),
        (_field(0, 0, b"\x01"), "field number 0"),
        (_field(99, 6), "wire type 6"),
    ],
)
def test_hostile_peer_bytes_are_refused_before_the_parser_reads_them(data: bytes, problem: str) -> None:
    """None of these is a real peer's message (thousands of unknown fields or groups, a length past the
    end, a giant message); the check is one linear walk that refuses them before the parser runs."""
    found = conv.wire_problem(data, pb.AgentMessage)
    assert found is not None and problem in found, found


def test_real_messages_pass_the_wire_check_even_with_a_few_unknown_fields() -> None:
    syms = [
        cpb.SymbolSpec(broker_symbol=f"S{i}", canonical_symbol=f"S{i}", digits=5, point=1e-5, tick_size=1e-5,
                      min_lot=0.01, max_lot=100, lot_step=0.01, stop_level=10)
        for i in range(5000)
    ]  # fmt: skip
    report = pb.AccountSymbolsReport(
        account_id="51001", role=cpb.ROLE_SLAVE, symbols=syms, symbol_mappings={"DE30.cash": "GER30"}
    )
    data = pb.AgentMessage(account_online=report).SerializeToString()
    assert conv.wire_problem(data, pb.AgentMessage) is None
    assert conv.wire_problem(data + UNKNOWN_VARINT * 10, pb.AgentMessage) is None  # a newer peer's fields
    beat = conv.core_message(m.DeliveryHeartbeat(m.DeliveryConfig(1000, 500, 100, 2000))).SerializeToString()
    assert conv.wire_problem(beat, pb.CoreMessage) is None


@pytest.mark.parametrize("name", FROM_EA)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_message_an_agent_sends_passes_the_wire_check(name: str, data: st.DataObject) -> None:
    payload: Any = data.draw(STRATEGIES[name])
    raw = conv.agent_message(m.FromAccount("51001", payload, 1764063000000)).SerializeToString()
    assert conv.wire_problem(raw, pb.AgentMessage) is None


@settings(max_examples=500, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.lists(st.sampled_from([UNKNOWN_VARINT, _field(99, 3), _field(99, 4), _len_delim(2, b"\x08\x01")]),
                 max_size=400).map(b"".join),
    )
)  # fmt: skip
def test_the_wire_check_never_raises(data: bytes) -> None:
    for cls in (pb.AgentMessage, pb.CoreMessage):
        assert conv.wire_problem(data, cls) is None or isinstance(conv.wire_problem(data, cls), str)
