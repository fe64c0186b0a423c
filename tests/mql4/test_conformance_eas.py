"""EA-side conformance: every transcript that is a well-formed session, run by one runner
(``tests/conformance_ea.py``, playing the Agent) against both EA implementations: the compiled MQL4 EAs
(over their named pipe and over TCP) and the Python simulated terminals. Each EA's broker is set up as the
session describes (account, symbols, specs, first ticket); in a slave session only the symbols it quotes
have prices, so the others are off quotes, as the session expects; in a master session the runner places
the trades in the terminal."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from echo.adapters.pipe.unix import connect_unix
from echo.domain.types import Side, SymbolSpec
from echo.sim.broker import SimBroker
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.slave import SimSlaveEA
from tests.conformance_ea import ea_session, play_agent
from tests.conformance_support import Step, load_transcript, transcript_paths

pytestmark = pytest.mark.e2e

EAS = ["compiled", "compiled-tcp", "python"]
"""The compiled EA over its named pipe (the shim's kernel32 calls) and over TCP (its ws2_32 calls), and the
Python simulated terminal."""


async def agent_end(tmp_path: Path, ea: str) -> tuple[trio.socket.SocketType, Path, dict[str, str]]:
    """Where the runner, playing the Agent, listens: the Unix socket the EA's pipe calls reach, or, for the
    compiled EA over TCP, a port on 127.0.0.1 (the EA's socket path is then one nobody serves). Also the
    EA inputs that pick the transport."""
    sock = tmp_path / "agent.sock"
    if ea != "compiled-tcp":
        listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await listener.bind(str(sock))
        listener.listen(1)
        return listener, sock, {}
    listener = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    return listener, tmp_path / "nobody-serves.sock", {"Transport": "tcp", "TcpPort": str(port)}


SLAVE_SESSIONS = [p for p in transcript_paths() if ea_session(load_transcript(p)) and "slave" in p.name]


def session_facts(steps: list[Step]) -> tuple[dict[str, Any], dict[str, tuple[float, float]], int]:
    """The session's handshake payload, the prices of the symbols it quotes first, and its first ticket."""
    lines = [s.line for s in steps if s.line is not None]
    handshake = next(x["payload"] for x in lines if x["type"] == "handshake")
    first_quotes = next(x["payload"]["quotes"] for x in lines if x["type"] == "quotes")
    ticket = next(
        x["payload"]["ticket"] for x in lines if x["type"] == "execution_result" and x["payload"]["success"]
    )
    priced = {first_quotes[0]["symbol"]: (first_quotes[0]["bid"], first_quotes[0]["ask"])}
    return handshake, priced, int(ticket)


async def start_compiled(
    exe: Path, home: Path, sock: Path, steps: list[Step], inputs: dict[str, str]
) -> trio.Process:
    handshake, priced, first_ticket = session_facts(steps)
    profile = [f"account {handshake['account_id']} USD 10000 100", f"tickets {first_ticket}"]
    for s in handshake["symbols"]:
        bid, ask = priced.get(s["broker_symbol"], (0.0, 0.0))
        profile.append(
            f"symbol {s['broker_symbol']} {s['digits']} {s['point']} {s['tick_size']} {s['min_lot']} "
            f"{s['max_lot']} {s['lot_step']} {s['stop_level']} {s['contract_size']} 1.0 {bid} {ask}"
        )
    (home / "broker.txt").write_text("\n".join(profile) + "\n", encoding="utf-8")
    (home / "files").mkdir()
    env = {
        **os.environ,
        "ECHO_SOCKET": str(sock),
        "ECHO_BROKER": str(home / "broker.txt"),
        "ECHO_FILES": str(home / "files"),
        **{f"ECHO_INPUT_{k}": v for k, v in inputs.items()},
    }
    return await trio.lowlevel.open_process([str(exe)], env=env)


def python_slave(sock: Path, steps: list[Step]) -> SimSlaveEA:
    handshake, priced, first_ticket = session_facts(steps)
    specs = [SymbolSpec(**{k: v for k, v in s.items() if k != "tick_value"}) for s in handshake["symbols"]]
    points = {s.broker_symbol: s.point for s in specs}
    # the market quotes by each spec's canonical symbol, here the broker's own name (as in the handshake)
    market = SimMarket(random.Random(1), {b: (bid + ask) / 2 for b, (bid, ask) in priced.items()})
    broker = SimBroker(
        "conformance",
        market,
        specs,
        random.Random(2),
        spread_points={b: round((ask - bid) / points[b]) for b, (bid, ask) in priced.items()},
        tick_values={s.broker_symbol: 1.0 for s in specs},
        ticket_base=first_ticket,
    )
    return SimSlaveEA(
        handshake["account_id"], broker, lambda: connect_unix(sock), lambda: time.time_ns() // 1_000_000
    )


@pytest.mark.parametrize("path", SLAVE_SESSIONS, ids=lambda p: p.name)
@pytest.mark.parametrize("ea", EAS)
async def test_slave_sessions_against_both_ea_implementations(
    path: Path, ea: str, slave_exe: Path, tmp_path: Path
) -> None:
    steps = load_transcript(path)
    listener, sock, inputs = await agent_end(tmp_path, ea)
    proc: trio.Process | None = None
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            if ea != "python":
                proc = await start_compiled(slave_exe, tmp_path, sock, steps, inputs)
            else:
                nursery.start_soon(python_slave(sock, steps).run)
            conn, _ = await listener.accept()
            stream = trio.SocketStream(conn)
            try:
                problems = await play_agent(steps, stream)
            finally:
                await stream.aclose()
                if proc is not None:
                    proc.terminate()
                    await proc.wait()
            nursery.cancel_scope.cancel()
    listener.close()
    assert problems == []


# --- master sessions ----------------------------------------------------------------------------------------

MASTER_SESSIONS = [p for p in transcript_paths() if ea_session(load_transcript(p)) and "master" in p.name]


def master_facts(steps: list[Step]) -> tuple[dict[str, Any], dict[str, Any]]:
    lines = [s.line for s in steps if s.line is not None]
    handshake = next(x["payload"] for x in lines if x["type"] == "handshake")
    intent = next(x["payload"] for x in lines if x["type"] == "trade_intent")
    return handshake, intent


class CompiledTerminal:
    """The compiled master's terminal, driven through the shim's control socket."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self.stream: trio.SocketStream | None = None
        self.buffer = b""

    async def _say(self, command: str) -> str:
        if self.stream is None:
            self.stream = await trio.open_unix_socket(str(self.control))
        await self.stream.send_all(command.encode() + b"\n")
        while b"\n" not in self.buffer:
            self.buffer += await self.stream.receive_some()
        line, self.buffer = self.buffer.split(b"\n", 1)
        assert line.startswith(b"ok"), (command, line)
        return line.decode()

    async def open(
        self, symbol: str, side: str, lots: float, sl: float | None, tp: float | None, magic: int
    ) -> None:
        await self._say(f"open {symbol} {side} {lots} {sl or 0} {tp or 0} {magic}")

    async def modify(self, trade_id: str, ticket: int, sl: float | None, tp: float | None) -> None:
        await self._say(f"modify {ticket} {sl or 0} {tp or 0}")

    async def close(self, trade_id: str, ticket: int, lots: float) -> None:
        await self._say(f"close {ticket} {lots}")


class PythonTerminal:
    """The simulated master's own trading calls."""

    def __init__(self, master: SimMasterEA) -> None:
        self.master = master

    async def open(
        self, symbol: str, side: str, lots: float, sl: float | None, tp: float | None, magic: int
    ) -> None:
        await self.master.open(symbol, Side(side), lots, sl, tp)

    async def modify(self, trade_id: str, ticket: int, sl: float | None, tp: float | None) -> None:
        await self.master.modify(trade_id, sl, tp)

    async def close(self, trade_id: str, ticket: int, lots: float) -> None:
        await self.master.partial_close(trade_id, lots)


@pytest.mark.parametrize("path", MASTER_SESSIONS, ids=lambda p: p.name)
@pytest.mark.parametrize("ea", EAS)
async def test_master_sessions_against_both_ea_implementations(
    path: Path, ea: str, master_exe: Path, tmp_path: Path
) -> None:
    steps = load_transcript(path)
    handshake, intent = master_facts(steps)
    symbol, price = intent["symbol"], float(intent["price"])
    mappings = handshake.get("symbol_mappings", {})
    listener, sock, inputs = await agent_end(tmp_path, ea)
    proc: trio.Process | None = None
    terminal: CompiledTerminal | PythonTerminal
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            if ea != "python":
                profile = [f"account {handshake['account_id']} USD 100000 100", f"tickets {intent['ticket']}"]
                for broker_symbol in mappings:
                    bid, ask = (price - 0.05, price) if broker_symbol == symbol else (100.0, 100.1)
                    profile.append(
                        f"symbol {broker_symbol} 2 0.01 0.01 0.01 100 0.01 0 100 1.0 {bid:.2f} {ask:.2f}"
                    )
                (tmp_path / "broker.txt").write_text("\n".join(profile) + "\n", encoding="utf-8")
                (tmp_path / "files").mkdir()
                env = {
                    **os.environ,
                    "ECHO_SOCKET": str(sock),
                    "ECHO_BROKER": str(tmp_path / "broker.txt"),
                    "ECHO_FILES": str(tmp_path / "files"),
                    "ECHO_CONTROL": str(tmp_path / "control.sock"),
                    "ECHO_INPUT_SymbolMappings": ",".join(f"{c}:{b}" for b, c in mappings.items()),
                    **{f"ECHO_INPUT_{k}": v for k, v in inputs.items()},
                }
                proc = await trio.lowlevel.open_process([str(master_exe)], env=env)
                terminal = CompiledTerminal(tmp_path / "control.sock")
            else:
                specs = [SymbolSpec(b, b, 2, 0.01, 0.01, 0.01, 100.0, 0.01, 0) for b in mappings]
                market = SimMarket(random.Random(1), {b: (price if b == symbol else 100.0) for b in mappings})
                broker = SimBroker(
                    "conformance",
                    market,
                    specs,
                    random.Random(2),
                    spread_points={b: 5 for b in mappings},
                    tick_values={b: 1.0 for b in mappings},
                    ticket_base=int(intent["ticket"]),
                )
                master = SimMasterEA(
                    handshake["account_id"],
                    broker,
                    lambda: connect_unix(sock),
                    lambda: time.time_ns() // 1_000_000,
                    random.Random(3),
                    symbol_mappings=mappings,
                    magic_number=int(intent["magic_number"]),
                )
                nursery.start_soon(master.run)
                terminal = PythonTerminal(master)
            conn, _ = await listener.accept()
            stream = trio.SocketStream(conn)
            try:
                problems = await play_agent(steps, stream, terminal)
            finally:
                await stream.aclose()
                if isinstance(terminal, CompiledTerminal) and terminal.stream is not None:
                    await terminal.stream.aclose()
                if proc is not None:
                    proc.terminate()
                    await proc.wait()
            nursery.cancel_scope.cancel()
    listener.close()
    assert problems == []
