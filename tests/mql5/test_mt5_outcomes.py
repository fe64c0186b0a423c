"""What the compiled MQL5 slave answers, command by command, with this test playing the Agent on TCP: the
live spread and slippage re-checked before anything is sent, stops the broker's StopLevel refuses left off
the order, the filling mode taken from the symbol, trade server retcodes translated by the EA's one table
(with the retcode named), a partial close that keeps the ticket, a stopped-out position reported from the
deals history, and a repeated command answered from the results file after a terminal restart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from echo.domain import messages as m
from echo.domain.ids import trade_comment, uuid7_from_int
from echo.domain.types import Side
from echo.pipe.codec import EA_TO_AGENT, Decoded, LineDecoder, encode

pytestmark = pytest.mark.e2e

BROKER = """account 53111 USD 5000 100
tickets 40000000
symbol XAUUSD.pro 2 0.01 0.01 0.1 50 0.1 50 100 1.0 2398.30 2398.70
filling XAUUSD.pro 2
symbol US500.cash 1 0.1 0.1 1 100 1 0 1 0.1 5000.0 5000.5
filling US500.cash 0
"""
"""Gold fills IOC only, with a StopLevel of 50 points (0.50); the index allows neither FOK nor IOC (RETURN)
and trades whole lots."""
TRACE = "e140a19ce1a2d94cc9cae6c506bd55c0"


class Agent:
    """The Agent's end of one MT5 slave's connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = LineDecoder(EA_TO_AGENT)
        self.pending: list[Decoded] = []
        self.seq = 0

    async def line(self, kind: str) -> Any:
        """The next line of this type (the EA's own clock's lines and others are passed over)."""
        while True:
            while not self.pending:
                data = await self.stream.receive_some()
                assert data, "the EA closed the connection"
                for ev in self.decoder.feed(bytes(data)):
                    assert isinstance(ev, Decoded), ev
                    self.pending.append(ev)
            got = self.pending.pop(0)
            if got.type == kind:
                return got.payload

    def ids(self) -> tuple[str, str]:
        self.seq += 1
        return uuid7_from_int(1764063060000 + self.seq, self.seq), uuid7_from_int(1764063000000 + self.seq, 7)

    async def command(self, msg: Any) -> Any:
        await self.stream.send_all(encode(msg, 1764063060000))
        ack = await self.line("pipe_delivery_ack")
        assert ack.status is m.DeliveryStatus.OK, ack
        return await self.line(
            {m.ExecuteOrder: "execution_result", m.CloseOrder: "close_result"}.get(type(msg), "modify_result")
        )

    async def open(self, symbol: str, lots: float, **limits: Any) -> Any:
        command_id, trade_id = self.ids()
        return await self.command(
            m.ExecuteOrder(
                command_id, trade_id, TRACE, symbol, Side.BUY, lots, 7, trade_comment(trade_id), **limits
            )
        )


async def start(exe: Path, home: Path, listener: trio.SocketListener) -> tuple[trio.Process, Agent]:
    port = listener.socket.getsockname()[1]
    env = {
        **os.environ,
        "ECHO_BROKER": str(home / "broker.txt"),
        "ECHO_FILES": str(home / "files"),
        "ECHO_BROKER_STATE": str(home / "state.txt"),
        "ECHO_CONTROL": str(home / "control.sock"),
        "ECHO_INPUT_TcpPort": str(port),
        "ECHO_INPUT_SnapshotMs": "200",
    }
    proc = await trio.lowlevel.open_process([str(exe)], env=env)
    agent = Agent(await listener.accept())
    hs = await agent.line("handshake")
    assert "position_mode/hedging" in hs.capabilities.features and hs.broker == "Echo Test Broker"
    return proc, agent


async def test_the_mql5_slave_checks_fills_and_reports_as_mt5_does(slave5_exe: Path, tmp_path: Path) -> None:
    (tmp_path / "broker.txt").write_text(BROKER, encoding="utf-8")
    (tmp_path / "files").mkdir()
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    with trio.fail_after(30):
        proc, agent = await start(slave5_exe, tmp_path, listener)
        try:
            wide = await agent.open("XAUUSD.pro", 0.5, max_spread_points=30.0)  # the spread is 40 points
            assert (wide.success, wide.error_code.value, wide.ticket) == (False, "ERR_SPREAD_TOO_WIDE", None)
            far = await agent.open("XAUUSD.pro", 0.5, master_price=2398.0, max_slippage_points=50.0)
            assert (far.error_code.value, far.mt4_error) == ("ERR_SLIPPAGE_TOO_HIGH", 0)
            assert "70.0 points" in far.error_message

            odd = await agent.open("XAUUSD.pro", 0.15)  # not a multiple of the 0.1 lot step
            assert (odd.error_code.value, odd.mt4_error) == ("ERR_INVALID_TRADE_VOLUME", 131)
            assert "retcode 10014" in odd.error_message

            # a stop 20 points from the price: the StopLevel (50) refuses it, the position opens without it
            near = await agent.open("XAUUSD.pro", 0.5, stop_loss=2398.10, take_profit=2420.0)
            assert near.success and near.executed_lots == 0.5
            index = await agent.open("US500.cash", 2.0)  # RETURN filling, the only one the symbol takes
            assert index.success

            snap = await agent.line("state_snapshot")
            gold = next(p for p in snap.positions if p.ticket == near.ticket)
            assert (gold.stop_loss, gold.take_profit) == (None, None)

            modify_id, _ = agent.ids()
            set_stops = m.ModifyOrder(
                modify_id, uuid7_from_int(1, 1), TRACE, near.ticket, "XAUUSD.pro", 2390.0, 2420.0
            )
            done = await agent.command(set_stops)
            assert (done.success, done.stop_loss) == (True, 2390.0)
            again_id, _ = agent.ids()
            same = await agent.command(
                m.ModifyOrder(
                    again_id, uuid7_from_int(1, 1), TRACE, near.ticket, "XAUUSD.pro", 2390.0, 2420.0
                )
            )
            assert (same.success, same.error_code.value, same.mt4_error) == (
                True,
                "NO_ERROR",
                0,
            )  # NO_CHANGES

            part_id, _ = agent.ids()
            part = await agent.command(
                m.CloseOrder(part_id, uuid7_from_int(1, 1), TRACE, near.ticket, "XAUUSD.pro", 0.2, 7)
            )
            assert (part.ticket, part.new_ticket, part.remaining_lots, part.closed_lots) == (
                near.ticket,
                near.ticket,
                0.3,
                0.2,
            )
            gone_id, _ = agent.ids()
            gone = await agent.command(
                m.CloseOrder(gone_id, uuid7_from_int(1, 1), TRACE, 99, "XAUUSD.pro", 0.2, 7)
            )
            assert (gone.success, gone.error_code.value, gone.mt4_error) == (
                False,
                "ERR_INVALID_TICKET",
                4108,
            )
            assert gone.closed_lots == 0.0  # a number, as PROTOCOL.md 6.13 has it, never null

            # a stop-out closes both positions on the broker: reported from the deals history, reason SO
            ctl = await trio.open_unix_socket(str(tmp_path / "control.sock"))
            await ctl.send_all(b"stopout\n")
            assert (await ctl.receive_some()).startswith(b"ok")
            await ctl.aclose()
            while True:
                snap = await agent.line("state_snapshot")
                if snap.recent_closes:
                    break
            assert snap.positions == []
            assert sorted((c.ticket, c.lots, c.reason) for c in snap.recent_closes) == sorted(
                [(near.ticket, 0.3, m.CloseReason.STOP_OUT), (index.ticket, 2.0, m.CloseReason.STOP_OUT)]
            )
        finally:
            proc.kill()  # the terminal dies: nothing flushed on the way out
            await proc.wait()
            await agent.stream.aclose()

        # restarted: the first open's repeat is answered from the results file, byte for byte
        proc, agent = await start(slave5_exe, tmp_path, listener)
        try:
            stored = (
                (tmp_path / "files" / "echo_slave_results.jsonl").read_text(encoding="utf-8").splitlines()
            )
            first = msgspec.json.decode(stored[3])["payload"]
            command_id, trade_id = first["command_id"], first["trade_id"]
            again = await agent.command(
                m.ExecuteOrder(
                    command_id, trade_id, TRACE, "XAUUSD.pro", Side.BUY, 0.5, 7, trade_comment(trade_id)
                )
            )
            assert msgspec.to_builtins(again) == first
        finally:
            proc.kill()
            await proc.wait()
            await agent.stream.aclose()
    await listener.aclose()
