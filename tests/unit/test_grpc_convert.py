"""Domain messages through the split-mode contracts and back: every EA message type in every envelope,
through the protobuf wire format (the codec's strategies generate the messages)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.pb.echo import v1 as pb
from echo.domain import messages as m
from tests.unit.test_codec import STRATEGIES

FROM_EA = sorted(conv.FROM_EA.values())
TO_EA = sorted(conv.TO_EA.values())


def wire_agent(msg: m.AgentToCore) -> m.AgentToCore:
    return conv.agent_message_from_pb(pb.AgentMessage.parse(bytes(conv.agent_message(msg))), "agent-1")


def wire_core(msg: m.CoreToAgent) -> m.CoreToAgent:
    return conv.core_message_from_pb(pb.CoreMessage.parse(bytes(conv.core_message(msg))))


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
            account_id="51001", quotes=pb.Quotes(quotes=[pb.Quote(symbol="X", bid=-1, ask=1)])
        )
    )
    with pytest.raises(conv.ConvertError, match="bid"):
        conv.agent_message_from_pb(bad, "agent-1")
    with pytest.raises(conv.ConvertError):
        conv.agent_message_from_pb(pb.AgentMessage(), "agent-1")


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_garbage_from_a_peer_is_a_convert_error_or_a_valid_message(data: bytes) -> None:
    """Bytes that decode at all (betterproto2 may keep a scalar where a message was due) become a domain
    message or a ConvertError, which the stream logs and skips; nothing else escapes."""
    for parse, convert in (
        (pb.AgentMessage.parse, lambda msg: conv.agent_message_from_pb(msg, "agent-1")),
        (pb.CoreMessage.parse, conv.core_message_from_pb),
    ):
        try:
            msg = parse(data)
        except Exception:
            continue  # undecodable bytes end the stream (logged as grpc_bad_agent_stream)
        with contextlib.suppress(conv.ConvertError):
            convert(msg)
