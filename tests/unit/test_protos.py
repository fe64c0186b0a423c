"""The Core <-> Agent contracts (protos/echo/v1): the committed generated code matches protos/, and the
envelopes round-trip through their wire format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from echo.adapters.transport.pb.echo import v1 as pb

ROOT = Path(__file__).resolve().parents[2]
PB = ROOT / "echo" / "adapters" / "transport" / "pb"
PROTOS = sorted((ROOT / "protos" / "echo" / "v1").glob("*.proto"))


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "protos"),
            f"--python_betterproto2_out={tmp_path}",
            "--python_betterproto2_opt=client_generation=async,server_generation=async",
            *map(str, PROTOS),
        ],
        check=True,
        capture_output=True,
        env=env,
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


def test_agent_and_core_envelopes_round_trip() -> None:
    intent = pb.TradeIntent(
        trade_id="019aba5a-1ff8-7d3b-a4ea-07b39d1963fe",
        trace_id="e140a19ce1a2d94cc9cae6c506bd55c0",
        symbol="XAUUSD.r",
        side=pb.OrderSide.BUY,
        lot_size=1.0,
        price=2398.45,
        magic_number=20251125,
        ticket=7001001,
        stop_loss=2385.5,
        attempt=1,
    )
    spec = pb.SymbolSpec(
        broker_symbol="XAUUSD.m", canonical_symbol="XAUUSD", digits=2, point=0.01, tick_size=0.01,
        min_lot=0.01, max_lot=100.0, lot_step=0.01, stop_level=30, contract_size=100.0,
    )  # fmt: skip
    agent_messages = [
        pb.AgentMessage(
            hello=pb.AgentHello(agent_id="agent-1", protocol_version=2, supports_lossless_delivery=True)
        ),
        pb.AgentMessage(
            account_online=pb.AccountSymbolsReport(
                account_id="51001",
                role=pb.Role.SLAVE,
                symbols=[spec],
                reported_at_ms=5,
                metadata=pb.HandshakeMetadata(protocol_version=2, client_semver="1.0.0"),
            )
        ),
        pb.AgentMessage(from_account=pb.FromAccount(account_id="9001", received_ms=7, trade_intent=intent)),
        pb.AgentMessage(
            command_ack=pb.CommandAck(
                account_id="51001", command_id="c", stage=pb.AckStage.PIPE_DELIVERED, result=pb.AckResult.OK
            )
        ),
    ]
    core_messages = [
        pb.CoreMessage(hello=pb.CoreHello(protocol_version=2, core_version="0.1.0")),
        pb.CoreMessage(
            to_account=pb.ToAccount(
                account_id="51001",
                execute_order=pb.ExecuteOrder(
                    command_id="c", symbol="XAUUSD.m", side=pb.OrderSide.SELL, lot_size=0.5
                ),
            )
        ),
        pb.CoreMessage(drop_command=pb.DropCommand(account_id="51001", command_id="c", reason="gave up")),
    ]
    for message in agent_messages:
        assert pb.AgentMessage.parse(bytes(message)) == message
    for core in core_messages:
        assert pb.CoreMessage.parse(bytes(core)) == core
    back = pb.AgentMessage.parse(bytes(agent_messages[2])).from_account.trade_intent
    assert back.stop_loss == 2385.5 and back.take_profit is None  # optional fields keep "unset" apart from 0
