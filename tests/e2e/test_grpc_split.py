"""Split mode over real gRPC (localhost TCP): Core and an Agent joined by the gRPC transport, simulated
terminals on the Agent; trades are copied; the stream is cut and the Agent reconnects by itself and
announces its accounts again; an Agent with a wrong token is refused. Real clock (gRPC runs on asyncio)."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, StreamTerminatedError
from structlog.testing import capture_logs

from echo.adapters.clock import SystemClock
from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.adapters.transport.grpc import GrpcAgentLink, GrpcCoreHub, client_tls, server_tls
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb
from echo.domain import messages as m
from echo.domain.config import AgentConfig, ConfigError, CoreConfig, DeliverySettings
from echo.domain.types import Side
from echo.services.agent.service import Agent
from echo.services.core.service import Core
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA
from tests.backends import free_port, self_signed_cert
from tests.e2e.world import fills, start_slave_and_master, wait_online

pytestmark = pytest.mark.e2e


async def start_split(
    nursery: trio.Nursery, port: int, listener: MemoryPipeListener, token: str = ""
) -> tuple[GrpcCoreHub, Core, GrpcAgentLink]:
    """Core serving gRPC on ``port`` and Agent ``agent-grpc`` streaming to it, its terminals on
    ``listener``; once the Agent's stream is up."""
    clock = SystemClock()
    hub = GrpcCoreHub("127.0.0.1", port, token=token)
    await nursery.start(hub.serve)
    core = Core(hub, MemoryStore(), clock, CoreConfig())
    await nursery.start(core.run)
    link = GrpcAgentLink("127.0.0.1", port, "agent-grpc", token=token)
    await nursery.start(link.run)
    await link.connected.wait()
    agent = Agent(
        link, listener, clock, AgentConfig(agent_id="agent-grpc"), DeliverySettings(), MemoryLedger()
    )
    await nursery.start(agent.run)
    return hub, core, link


async def test_trades_are_copied_over_grpc_and_the_agent_reconnects() -> None:
    port = free_port()
    clock = SystemClock()
    listener = MemoryPipeListener()
    market = SimMarket(random.Random(1))
    with trio.fail_after(60):
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            hub, core, link = await start_split(nursery, port, listener, token="s3cret")
            slave, master = await start_slave_and_master(
                nursery, market, listener.connect, clock.now_ms, profile=1
            )
            await wait_online(core, "9001", "51001")

            first = await master.open("XAUUSD", Side.BUY, 0.5)
            await master.wait_all_acked()
            await core.wait_for(lambda: core.stats.get("copied") == 1 and core.in_flight == 0)

            # the stream breaks (as when the network drops): Core sees the accounts go, the Agent comes back
            reconnects = link.reconnects
            assert hub.disconnect("agent-grpc")
            await core.wait_for(lambda: not core.accounts["51001"].online)
            await core.wait_for(lambda: link.reconnects > reconnects and core.accounts["51001"].online)

            second = await master.open("GER30", Side.SELL, 0.5)
            for t in (first, second):
                await master.close(t)
            await master.wait_all_acked()
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)
            assert fills(slave) == Counter({first: 1, second: 1})
            assert slave.broker.open_orders() == []

            # an Agent with the wrong token is refused, and Core keeps serving the others
            intruder = GrpcAgentLink("127.0.0.1", port, "agent-x", token="wrong")
            with capture_logs() as logs:
                nursery.start_soon(intruder.run)
                await intruder.failed.wait()
            assert "PERMISSION_DENIED" in intruder.last_error and "invalid agent token" in intruder.last_error
            assert any(e["event"] == "grpc_agent_refused" and e["agent_id"] == "agent-x" for e in logs)
            assert "agent-x" not in hub.outboxes and not intruder.connected.is_set()
            nursery.cancel_scope.cancel()


async def test_each_command_goes_only_to_the_agent_that_owns_the_slave_even_after_it_moves() -> None:
    port = free_port()
    clock = SystemClock()
    market = SimMarket(random.Random(5))
    listeners = {"agent-a": MemoryPipeListener(), "agent-b": MemoryPipeListener()}
    with trio.fail_after(60):
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            hub = GrpcCoreHub("127.0.0.1", port)
            await nursery.start(hub.serve)
            sent: list[tuple[str, str]] = []
            real_send = hub.send

            async def spy(agent_id: str, msg: m.CoreToAgent) -> None:
                if isinstance(msg, m.ToAccount) and isinstance(msg.message, m.Command):
                    sent.append((agent_id, msg.account_id))
                await real_send(agent_id, msg)

            hub.send = spy  # type: ignore[method-assign]
            store = MemoryStore()
            core = Core(hub, store, clock, CoreConfig())
            await nursery.start(core.run)
            agents: dict[str, Agent] = {}
            for agent_id, listener in listeners.items():
                link = GrpcAgentLink("127.0.0.1", port, agent_id)
                await nursery.start(link.run)
                await link.connected.wait()
                agents[agent_id] = Agent(
                    link, listener, clock, AgentConfig(agent_id=agent_id), DeliverySettings(), MemoryLedger()
                )
                await nursery.start(agents[agent_id].run)

            def slave(account: str, agent_id: str, broker: object = None) -> SimSlaveEA:
                return SimSlaveEA(
                    account,
                    broker or slave_broker(1, market, random.Random(account)),  # type: ignore[arg-type]
                    listeners[agent_id].connect,
                    clock.now_ms,
                )

            master = SimMasterEA(
                "9001",
                master_broker(market, random.Random(3)),
                listeners["agent-a"].connect,
                clock.now_ms,
                random.Random(4),
            )
            s1, s2 = slave("51001", "agent-a"), slave("51002", "agent-b")
            s2_scope = trio.CancelScope()

            async def run_s2(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with s2_scope:
                    await s2.run(task_status=task_status)

            await nursery.start(master.run)
            await nursery.start(s1.run)
            await nursery.start(run_s2)
            online = ("9001", "51001", "51002")
            await core.wait_for(lambda: all(a in core.accounts and core.accounts[a].online for a in online))

            first = await master.open("XAUUSD", Side.BUY, 0.5)
            await master.wait_all_acked()
            await core.wait_for(lambda: core.stats.get("copied") == 2 and core.in_flight == 0)
            owners = {"51001": "agent-a", "51002": "agent-b"}
            assert sent and all(owners[acc] == agent for agent, acc in sent), sent

            # the slave's terminal moves to the other host: it goes offline at agent-b, online at agent-a
            s2_scope.cancel()
            await core.wait_for(lambda: not core.accounts["51002"].online)
            # meanwhile the master closes: agent-b holds the slave's close for when its terminal returns
            await master.close(first)
            await master.wait_all_acked()
            await core.wait_for(
                lambda: any(
                    p.account_id == "51002" and p.state.stage.name == "AGENT_BUFFERED"
                    for p in core._pending.values()
                )
            )
            assert any(h.account_id == "51002" for h in agents["agent-b"].held.values())
            moved = slave("51002", "agent-a", s2.broker)
            with capture_logs() as logs:
                await nursery.start(moved.run)
                await core.wait_for(lambda: core.accounts["51002"].online)
            assert core.accounts["51002"].agent_id == "agent-a"
            assert any(e["event"] == "core_account_moved" and e["to_agent"] == "agent-a" for e in logs)
            before = len(sent)
            second = await master.open("GER30", Side.SELL, 0.5)
            await master.close(second)
            await master.wait_all_acked()
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)
            assert sent[before:] and all(agent == "agent-a" for agent, _ in sent[before:]), sent[before:]
            assert fills(s1) == Counter({first: 1, second: 1})
            assert fills(s2) + fills(moved) == Counter({first: 1, second: 1})
            assert s1.broker.open_orders() == [] and s2.broker.open_orders() == []
            events = [e.kind for e in await store.events(limit=1000)]
            assert "account_moved" in events
            # Core told agent-b to let go of what it held for the account that left it
            assert not any(h.account_id == "51002" for h in agents["agent-b"].held.values())
            nursery.cancel_scope.cancel()


async def test_tls_compat_mode_and_the_delivery_settings_in_core_hello(tmp_path: Path) -> None:
    """Core serving TLS: an Agent that trusts its certificate streams; one in plaintext does not get in.
    An Agent without lossless delivery is run in compat mode and counted; every Agent gets Core's delivery
    settings in the hello."""
    cert, key = self_signed_cert(tmp_path)
    port = free_port()
    clock = SystemClock()
    core_delivery = m.DeliveryHeartbeat(m.DeliveryConfig(700, 300, 9, 1500))
    with trio.fail_after(30):
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            hub = GrpcCoreHub(
                "127.0.0.1",
                port,
                delivery=core_delivery,
                tls=server_tls(str(cert), str(key)),
                heartbeat_interval_ms=500,
            )
            await nursery.start(hub.serve)
            core = Core(hub, MemoryStore(), clock, CoreConfig())
            await nursery.start(core.run)

            link = GrpcAgentLink(
                "127.0.0.1",
                port,
                "agent-tls",
                tls=client_tls(str(cert)),
                heartbeat_interval_ms=500,
                lossless=False,
            )
            await nursery.start(link.run)
            await link.connected.wait()
            assert link.compat_mode and hub.stats["compat_mode"] == 1
            # the first thing the Agent hears is Core's delivery settings, from the hello
            assert await link.receive() == core_delivery

            plain = GrpcAgentLink("127.0.0.1", port, "agent-plain")
            nursery.start_soon(plain.run)
            await plain.failed.wait()
            assert not plain.connected.is_set() and "agent-plain" not in hub.outboxes

            with pytest.raises(ConfigError, match=r"split\.tls_ca"):
                client_tls(str(tmp_path / "missing.pem"))
            with pytest.raises(ConfigError, match=r"split\.tls_cert"):
                server_tls(str(key), str(key))
            nursery.cancel_scope.cancel()


class _RawBytes(CodecBase):
    """A hostile peer's codec: whatever bytes it likes, as protobuf."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


def _unknown_fields(n: int) -> bytes:
    return b"\x98\x06\x05" * n  # field 99, varint 5: a field no side knows


async def _hostile_stream(port: int, messages: list[bytes]) -> str:
    """Send raw messages on a StreamBidi stream; how the stream ended."""
    channel = Channel("127.0.0.1", port, codec=_RawBytes())
    try:
        async with channel.request(
            "/echo.v1.AgentService/StreamBidi", Cardinality.STREAM_STREAM, bytes, bytes
        ) as stream:
            for i, raw in enumerate(messages):
                await stream.send_message(raw, end=i == len(messages) - 1)
            while (await stream.recv_message()) is not None:
                pass
            return "ended"
    except (GRPCError, StreamTerminatedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        channel.close()


async def test_hostile_grpc_bytes_end_that_stream_only_and_never_stall_core() -> None:
    """1.5 MB of unknown fields as a stream's first message (over the hello's size: refused unread), 0.9 MB
    of them after a valid hello (minutes of work for the protobuf parser), and 100,000 nested groups: each
    ends its own stream at once; copying goes on."""
    port = free_port()
    clock = SystemClock()
    listener = MemoryPipeListener()
    market = SimMarket(random.Random(1))
    hello = pb.AgentMessage(hello=pb.AgentHello(agent_id="agent-bad", protocol_version=1)).SerializeToString()
    with trio.fail_after(60):
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            hub, core, _link = await start_split(nursery, port, listener)
            slave, master = await start_slave_and_master(
                nursery, market, listener.connect, clock.now_ms, profile=1
            )
            await wait_online(core, "9001", "51001")

            groups = b"\x9b\x06" * 100_000 + b"\x9c\x06" * 100_000  # field 99 start/end group, nested
            with capture_logs() as logs:
                for messages in (
                    [_unknown_fields(500_000)],
                    [hello, _unknown_fields(300_000)],
                    [hello, groups],
                ):
                    started = time.monotonic()
                    ended = await trio_asyncio.aio_as_trio(_hostile_stream)(port, messages)
                    assert time.monotonic() - started < 5, ended
            bad = [e for e in logs if e["event"] == "grpc_bad_agent_stream"]
            assert len(bad) == 2 and "unknown fields" in bad[0]["error"] and "wire type 3" in bad[1]["error"]
            assert set(hub.outboxes) == {"agent-grpc"}

            t = await master.open("XAUUSD", Side.BUY, 0.5)
            await master.close(t)
            await master.wait_all_acked()
            await core.wait_for(lambda: not core.trades and core.in_flight == 0)
            assert fills(slave) == Counter({t: 1})
            nursery.cancel_scope.cancel()
