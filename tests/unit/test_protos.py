"""The Core <-> Agent contracts (protos/echo/v1): the committed generated code matches protos/, runs on
protobuf's C backend, and the envelopes round-trip through their wire format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf.internal import api_implementation

from echo.adapters.transport.pb.echo.v1 import agent_grpc
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as apb
from echo.adapters.transport.pb.echo.v1 import common_pb2 as cpb
from echo.adapters.transport.pb.echo.v1 import trade_pb2 as tpb

ROOT = Path(__file__).resolve().parents[2]
PB = ROOT / "echo" / "adapters" / "transport" / "pb"


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(PB): p.read_bytes()
        for p in PB.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert fresh.keys() == committed.keys(), "run `make proto`: the generated files differ from protos/"
    drifted = [str(k) for k in fresh if fresh[k] != committed[k]]
    assert not drifted, f"run `make proto`: {drifted} differ from what protos/ generates"


def test_the_messages_run_on_protobufs_c_backend() -> None:
    assert api_implementation.Type() == "upb"
    assert apb.AgentMessage.DESCRIPTOR.full_name == "echo.v1.AgentMessage"  # the wire names stay echo.v1
    assert "/echo.v1.AgentService/StreamBidi" in agent_grpc.AgentServiceStub.__init__.__code__.co_consts


def test_agent_and_core_envelopes_round_trip() -> None:
    intent = tpb.TradeIntent(
        trade_id="019aba5a-1ff8-7d3b-a4ea-07b39d1963fe",
        trace_id="e140a19ce1a2d94cc9cae6c506bd55c0",
        symbol="XAUUSD.r",
        side=cpb.ORDER_SIDE_BUY,
        lot_size=1.0,
        price=2398.45,
        magic_number=20251125,
        ticket=7001001,
        stop_loss=2385.5,
        attempt=1,
    )
    spec = cpb.SymbolSpec(
        broker_symbol="XAUUSD.m", canonical_symbol="XAUUSD", digits=2, point=0.01, tick_size=0.01,
        min_lot=0.01, max_lot=100.0, lot_step=0.01, stop_level=30, contract_size=100.0,
    )  # fmt: skip
    agent_messages = [
        apb.AgentMessage(
            hello=apb.AgentHello(agent_id="agent-1", protocol_version=2, supports_lossless_delivery=True)
        ),
        apb.AgentMessage(
            account_online=apb.AccountSymbolsReport(
                account_id="51001",
                role=cpb.ROLE_SLAVE,
                symbols=[spec],
                reported_at_ms=5,
                metadata=apb.HandshakeMetadata(protocol_version=2, client_semver="1.0.0"),
            )
        ),
        apb.AgentMessage(from_account=apb.FromAccount(account_id="9001", received_ms=7, trade_intent=intent)),
        apb.AgentMessage(
            command_ack=apb.CommandAck(
                account_id="51001",
                command_id="c",
                stage=apb.ACK_STAGE_PIPE_DELIVERED,
                result=apb.ACK_RESULT_OK,
            )
        ),
    ]
    core_messages = [
        apb.CoreMessage(hello=apb.CoreHello(protocol_version=2, core_version="0.1.0")),
        apb.CoreMessage(
            to_account=apb.ToAccount(
                account_id="51001",
                execute_order=tpb.ExecuteOrder(
                    command_id="c", symbol="XAUUSD.m", side=cpb.ORDER_SIDE_SELL, lot_size=0.5
                ),
            )
        ),
        apb.CoreMessage(drop_command=apb.DropCommand(account_id="51001", command_id="c", reason="gave up")),
    ]
    for message in agent_messages:
        assert apb.AgentMessage.FromString(message.SerializeToString()) == message
    for core in core_messages:
        assert apb.CoreMessage.FromString(core.SerializeToString()) == core
    back = apb.AgentMessage.FromString(agent_messages[2].SerializeToString()).from_account.trade_intent
    assert back.stop_loss == 2385.5 and not back.HasField("take_profit")  # optional: "unset" apart from 0
