"""The terminal shim's ``ECHO_EVENTS`` file (what ``bench/bench_ea.py`` times copies with): each trade call,
a person's on the control channel here, is noted with the wall-clock time it was made, its ticket (-1 when
refused) and its comment; and the control channel is served as commands arrive, not on the EA's timer ticks
(the timer here is ten minutes: every order below is placed before its first tick)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio

from tests.mql4.harness_support import Terminal
from tests.mql5.conftest import slave5_exe

__all__ = ["slave5_exe"]

pytestmark = pytest.mark.e2e

MT4_BROKER = """account 9101 USD 100000 100
tickets 90000000
symbol XAUUSD.r 2 0.01 0.01 0.01 100 0.01 0 100 1.0 2398.40 2398.60
"""
MT5_BROKER = """account 53111 USD 5000 100
tickets 40000000
symbol XAUUSD.pro 2 0.01 0.01 0.1 50 0.1 0 100 1.0 2398.30 2398.70
filling XAUUSD.pro 2
"""


class Control:
    """The terminal's control channel, answers read as they are (``error ...`` included)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stream: trio.SocketStream | None = None
        self.buf = b""

    async def ask(self, command: str) -> str:
        while self.stream is None:  # the terminal binds its control socket as it starts
            try:
                self.stream = await trio.open_unix_socket(str(self.path))
            except OSError:
                await trio.sleep(0.01)
        await self.stream.send_all(command.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = await self.stream.receive_some()
            assert chunk, "the control channel closed"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def events(path: Path) -> list[tuple[int, str, int, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        at, kind, ticket, comment = line.split(" ", 3)
        out.append((int(at), kind, int(ticket), comment))
    return out


@pytest.mark.parametrize("terminal", ["mt4", "mt5"])
async def test_trade_calls_are_noted_with_their_time_and_orders_are_placed_between_timer_ticks(
    terminal: str, master_exe: Path, slave5_exe: Path, tmp_path: Path
) -> None:
    home, log = tmp_path / "terminal", tmp_path / "events.txt"
    env = {**os.environ, "ECHO_SOCKET": str(tmp_path / "nobody-serves.sock"), "ECHO_EVENTS": str(log)}
    exe, broker, symbol = (
        (master_exe, MT4_BROKER, "XAUUSD.r") if terminal == "mt4" else (slave5_exe, MT5_BROKER, "XAUUSD.pro")
    )
    t = Terminal([str(exe)], home, broker, env, home / "control.sock", {"TimerMs": "600000"})
    await t.start()
    assert t.proc is not None
    control = Control(home / "control.sock")
    try:
        with trio.fail_after(30):  # far less than the ten minutes to the EA's first timer tick
            await control.ask("orders")  # the terminal is serving
            before = time.time_ns()
            opened = await control.ask(f"open {symbol} BUY 1.0 0 0")
            refused = await control.ask(f"open {symbol} BUY 0.005 0 0")  # not a multiple of the lot step
            ticket = int(opened.split()[1])
            assert (await control.ask(f"modify {ticket} 2380.00 2420.00")) == (
                "ok" if terminal == "mt4" else f"ok {ticket}"
            )
            rest = int((await control.ask(f"close {ticket} 0.4")).split()[1])
            remainder = rest if terminal == "mt4" else ticket  # MT4 gives the remainder a ticket of its own
            assert (await control.ask(f"close {remainder} 0.6")).startswith("ok")
            after = time.time_ns()
            t.proc.send_signal(signal.SIGTERM)  # interrupts the wait for the tick: OnDeinit, exit 0
            assert await t.proc.wait() == 0
    finally:
        if control.stream is not None:
            await control.stream.aclose()
        await t.kill()

    assert opened.startswith("ok") and refused.startswith("error")
    noted = events(log)
    assert [(kind, n, comment) for _, kind, n, comment in noted] == [
        ("order_send", ticket, ""),
        ("order_send", -1, ""),
        ("order_modify", ticket, ""),
        ("order_close", ticket, ""),
        ("order_close", remainder, ""),
    ]
    times = [at for at, *_ in noted]
    assert before <= times[0] and times == sorted(times) and times[-1] <= after


async def test_writes_on_the_agents_pipe_are_noted_with_their_time_and_size(
    master_exe: Path, tmp_path: Path
) -> None:
    """The master's handshake, its first line to the Agent (served here by the test), is noted as one
    ``pipe_write`` of its size, made before it arrived."""
    sock, log = tmp_path / "agent.sock", tmp_path / "events.txt"
    env = {**os.environ, "ECHO_SOCKET": str(sock), "ECHO_EVENTS": str(log)}
    t = Terminal([str(master_exe)], tmp_path / "master", MT4_BROKER, env, tmp_path / "control.sock", {})
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(str(sock))
    listener.listen(1)
    await t.start()
    assert t.proc is not None
    try:
        with trio.fail_after(30):
            conn, _ = await listener.accept()
            received = b""
            while b"\n" not in received:
                chunk = await conn.recv(65536)
                assert chunk, "the EA closed the pipe before its handshake"
                received += chunk
            arrived = time.time_ns()
            line = received[: received.index(b"\n") + 1]  # a heartbeat may have followed it
            t.proc.send_signal(signal.SIGTERM)
            assert await t.proc.wait() == 0
            conn.close()
    finally:
        listener.close()
        await t.kill()
    assert b'"type":"handshake"' in line.replace(b" ", b"")
    at, kind, size, comment = events(log)[0]
    assert (kind, size, comment) == ("pipe_write", len(line), "") and at <= arrived
