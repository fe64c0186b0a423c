"""Garbage on the agent's real socket gets error replies (or a clean disconnect of that connection only),
while copying for every other terminal goes on."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from echo.adapters.clock import SystemClock
from echo.adapters.pipe.unix import connect_unix
from echo.adapters.store.sqlite import SqliteStore
from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, StoreConfig
from echo.domain.types import Role, Side
from echo.pipe.codec import AGENT_TO_EA, Decoded, LineDecoder, encode
from echo.sim.market import SimMarket
from tests.e2e.world import fills, start_copier, start_slave_and_master, start_world

pytestmark = pytest.mark.e2e


async def read_errors(stream: trio.SocketStream, n: int) -> list[m.ErrorReply]:
    decoder = LineDecoder(AGENT_TO_EA)
    errors: list[m.ErrorReply] = []
    while len(errors) < n:
        data = await stream.receive_some()
        assert data, f"connection closed after {len(errors)} of {n} error replies"
        errors += [e.payload for e in decoder.feed(data) if isinstance(e, Decoded) and e.type == "error"]
    return errors


async def test_garbage_gets_errors_and_others_keep_copying(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    # the store URL is the store handed in below, so the Agent's ack ledger goes beside it (tmp_path)
    config = Config(
        agent=AgentConfig(socket_path=str(sock)), store=StoreConfig(f"sqlite:///{tmp_path / 'echo.db'}")
    )
    store = SqliteStore.open(tmp_path / "echo.db")
    market = SimMarket(random.Random(1))
    clock = SystemClock()

    async def connect() -> trio.abc.Stream:
        return await connect_unix(sock)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            copier = await start_copier(nursery, config, store=store)
            slave, master = await start_slave_and_master(nursery, market, connect, clock.now_ms)
            core = copier.core
            await core.wait_for(lambda: all(a in core.accounts for a in ("51001", "9001")))

            # 1. a peer that speaks wrong shapes and garbage gets one precise error per line
            bad = await connect_unix(sock)
            lines = [
                b'{"type": "heartbeat", "timestamp_ms": 1, "payload": {"x": "\xff\xfe"}}\n',
                b"\x00 not json\n",
                b"[1, 2, 3]\n",
                json.dumps({"type": "buy_now", "timestamp_ms": 1, "payload": {}}).encode() + b"\n",
                json.dumps({"type": "heartbeat", "timestamp_ms": "soon", "payload": {}}).encode() + b"\n",
                json.dumps({"type": "trade_intent", "timestamp_ms": 1, "payload": {"symbol": "X"}}).encode()
                + b"\n",
                json.dumps({"type": "execute_order", "timestamp_ms": 1, "payload": {}}).encode() + b"\n",
                json.dumps({"type": "heartbeat", "timestamp_ms": 1, "payload": {}}).encode() + b"\n",
                b'{"type": "quotes", "timestamp_ms": 1, "payload": {"quotes": []}}\n',
            ]
            await bad.send_all(b"".join(lines))
            errors = await read_errors(bad, 8)
            assert [e.code for e in errors] == [
                "ERR_PROTOCOL_INVALID_UTF8",
                "ERR_PROTOCOL_MALFORMED_JSON",
                "ERR_PROTOCOL_WRONG_TYPE",
                "ERR_PROTOCOL_UNKNOWN_TYPE",
                "ERR_PROTOCOL_WRONG_TYPE",
                "ERR_PROTOCOL_MISSING_FIELD",
                "ERR_PROTOCOL_MISSING_FIELD",
                "ERR_PROTOCOL_NOT_HANDSHAKEN",  # the valid quotes line, sent before any handshake
            ]

            # 2. a 10 MB line: one error, nothing buffered, and the connection still serves
            big = await connect_unix(sock)
            async with trio.open_nursery() as writers:

                async def write_big() -> None:
                    chunk = b"x" * (1 << 20)
                    for _ in range(10):
                        await big.send_all(chunk)
                    await big.send_all(b"\n" + b'{"type":"bogus","timestamp_ms":1,"payload":{}}\n')

                writers.start_soon(write_big)
                errors = await read_errors(big, 2)
            assert [e.code for e in errors] == ["ERR_PROTOCOL_LINE_TOO_LONG", "ERR_PROTOCOL_UNKNOWN_TYPE"]

            # 3. random bytes from a fuzzing peer never take the agent down
            rnd = await connect_unix(sock)
            rng = random.Random(7)
            await rnd.send_all(bytes(rng.getrandbits(8) for _ in range(200_000)))
            await rnd.aclose()

            # meanwhile, and afterwards, copying goes on for the real terminals
            trade_ids = [await master.open("XAUUSD", Side.BUY, 0.3) for _ in range(3)]
            for t in trade_ids:
                await master.close(t)
            await master.wait_all_acked()
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)
            assert fills(slave) == Counter({t: 1 for t in trade_ids})
            assert slave.broker.open_orders() == []
            assert copier.agent.protocol_errors >= 10
            await bad.aclose()
            await big.aclose()
            nursery.cancel_scope.cancel()


async def test_a_deeply_nested_line_ends_nothing_and_copying_goes_on(tmp_path: Path) -> None:
    """A JSON object nested 100,000 levels deep, before a handshake and inside a handshaken terminal's
    heartbeat, gets ERR_PROTOCOL_TOO_DEEP on that connection; the copier keeps copying for the others."""
    sock = tmp_path / "agent.sock"
    config = Config(agent=AgentConfig(socket_path=str(sock), ledger_url="memory://"))
    store = SqliteStore.open(tmp_path / "echo.db")
    market = SimMarket(random.Random(1))
    clock = SystemClock()

    async def connect() -> trio.abc.Stream:
        return await connect_unix(sock)

    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    heartbeat_deep = b'{"type":"heartbeat","timestamp_ms":1,"payload":{"seq":1,"x":' + deep + b"}}\n"
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            copier = await start_copier(nursery, config, store=store)
            slave, master = await start_slave_and_master(nursery, market, connect, clock.now_ms)
            core = copier.core
            await core.wait_for(lambda: all(a in core.accounts for a in ("51001", "9001")))

            before = await connect_unix(sock)
            await before.send_all(deep + b"\n" + heartbeat_deep)
            assert [e.code for e in await read_errors(before, 2)] == ["ERR_PROTOCOL_TOO_DEEP"] * 2

            handshaken = await connect_unix(sock)
            hs = m.Handshake("51777", Role.SLAVE, 2)
            await handshaken.send_all(encode(hs, 1) + heartbeat_deep)
            assert [e.code for e in await read_errors(handshaken, 1)] == ["ERR_PROTOCOL_TOO_DEEP"]

            trade_ids = [await master.open("XAUUSD", Side.BUY, 0.3) for _ in range(2)]
            for t in trade_ids:
                await master.close(t)
            await master.wait_all_acked()
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)
            assert fills(slave) == Counter({t: 1 for t in trade_ids})
            # both connections are still served: a valid line gets its answer
            await before.send_all(b'{"type":"bogus","timestamp_ms":1,"payload":{}}\n')
            assert [e.code for e in await read_errors(before, 1)] == ["ERR_PROTOCOL_UNKNOWN_TYPE"]
            await before.aclose()
            await handshaken.aclose()
            nursery.cancel_scope.cancel()


class _FailingStream(trio.abc.Stream):
    """A connection whose transport fails in a way no handler expects, after a valid handshake."""

    def __init__(self) -> None:
        self.lines = [encode(m.Handshake("51999", Role.SLAVE, 2), 1)]

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.lines:
            return self.lines.pop()
        raise RuntimeError("the transport failed in an unexpected way")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_an_unexpected_error_in_one_connection_ends_that_connection_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery)
            slave = await w.add_slave("51001", 0)
            master = await w.add_master("9001")
            await w.online("9001", "51001")
            agent = w.copier.agent
            with capture_logs() as logs:
                # the handler the pipe listener runs for every connection
                await agent._serve_connection(_FailingStream())
            (failed,) = [e for e in logs if e["event"] == "agent_connection_failed"]
            assert failed["error"] == "RuntimeError: the transport failed in an unexpected way"
            assert failed["account_id"] == "51999" and "where" in failed
            assert agent.stats["connection_failures"] == 1 and "51999" not in agent.connections
            await w.copier.core.wait_for(lambda: not w.copier.core.accounts["51999"].online)

            t = await master.open("XAUUSD", Side.BUY, 0.3)
            await master.close(t)
            await master.wait_all_acked()
            await w.settled()
            assert fills(slave) == Counter({t: 1})
            nursery.cancel_scope.cancel()
