"""Split mode against misbehaving Agents: Core runs as its own process (``run --role core``, JSON logs
read line by line), the honest Agent ``agent-a`` (master 9001, slave 51001) runs here over real localhost
gRPC, and each test plays one abuse against it: another Agent claiming its accounts or trading as its
master, its id reused, a report from the future, a stream that stops reading, oversized and malformed
streams, a quote flood, a Ping flood beside a stuck stream.

Each test records Core's peak RSS and the live copy latency (master open -> slave fill) in its log line
``split_abuse_measure`` (and in the JSON file ``ECHO_SPLIT_REPORT`` names, when set); it asserts what Core
did, never tight timings. ``ECHO_SPLIT_CORE=/path/to/checkout`` runs Core from another checkout (with the
shared token only), to measure the code before these rules."""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import StreamClosedError

from echo.adapters.clock import SystemClock
from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.grpc import GrpcAgentLink, GrpcCoreHub
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as pb
from echo.domain import messages as m
from echo.domain.config import AgentConfig, CoreConfig, DeliverySettings
from echo.domain.types import Side
from echo.services.agent.service import Agent
from echo.services.core.service import Core
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import slave_broker
from echo.sim.slave import SimSlaveEA
from tests.backends import free_port
from tests.e2e.world import CLI, fills, master_terminal, slave_terminal

pytestmark = pytest.mark.e2e

log = structlog.get_logger("tests.split_abuse")
ROOT = Path(__file__).resolve().parents[2]
BASELINE = os.environ.get("ECHO_SPLIT_CORE", "")
"""A checkout to run Core from (the code before per-Agent tokens and limits): shared token only."""
SHARED = "shared-token-0123456789"
TOKENS = {a: (SHARED if BASELINE else f"token-of-{a}-0123456789") for a in ("agent-a", "agent-b", "agent-c")}
WRITE_TIMEOUT_MS = 1000


class CoreProcess:
    """``run --role core`` as a process: its JSON log lines as they come, its memory from /proc."""

    def __init__(self, proc: trio.Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = trio.Event()

    async def pump(self) -> None:
        assert self.proc.stderr is not None
        pending = b""
        async for chunk in self.proc.stderr:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                self.raw.append(text)
                try:
                    event = json.loads(text)
                except ValueError:
                    event = {"event": "", "text": text}
                self.events.append(event if isinstance(event, dict) else {"event": "", "text": text})
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def until(self, predicate: Callable[[dict[str, Any]], bool], start: int = 0) -> dict[str, Any]:
        """The first log event from ``start`` on that satisfies ``predicate`` (waits for it)."""
        seen = start
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            assert self.proc.returncode is None, "core ended:\n" + "\n".join(self.raw[-30:])
            await self._changed.wait()

    def logged(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name and _has(e, fields)]

    def memory_mb(self) -> tuple[float, float]:
        """(RSS now, peak RSS) in MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if "kB" in line}
        return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024


def _has(event: dict[str, Any], fields: dict[str, Any]) -> bool:
    return all(k in event and (v is ... or v == event[k] or (isinstance(v, str) and v in str(event[k])))
               for k, v in fields.items())  # fmt: skip


@asynccontextmanager
async def core_process(tmp_path: Path) -> AsyncIterator[CoreProcess]:
    port = free_port()
    if BASELINE:
        split = f'token = "{SHARED}"\n'
    else:
        tokens = ", ".join(f'"{a}" = "{t}"' for a, t in TOKENS.items())
        split = (
            f"agent_tokens = {{ {tokens} }}\nhello_timeout_ms = 500\nwrite_timeout_ms = {WRITE_TIMEOUT_MS}\n"
            "send_queue = 2000\ncontrol_per_s = 200\n"
        )
    config = tmp_path / "core.toml"
    config.write_text(
        f'[split]\nlisten = "127.0.0.1:{port}"\n{split}[store]\nurl = "memory://"\n'
        '[log]\nformat = "json"\nlevel = "info"\n[delivery]\nheartbeat_interval_ms = 1000\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": BASELINE or str(ROOT)}
    proc = await trio.lowlevel.open_process(
        [*CLI, "run", "--role", "core", "--config", str(config)],
        stderr=subprocess.PIPE,
        env=env,
        cwd=BASELINE or str(ROOT),
    )
    core = CoreProcess(proc, port)
    stopped = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.pump)  # until Core's stderr ends: it is read while Core stops too
        try:
            with trio.fail_after(30):
                await core.until(lambda e: "Agents connect to" in e.get("text", ""))
            yield core
        finally:
            with trio.CancelScope(shield=True):
                proc.terminate()
                with trio.move_on_after(20):
                    await proc.wait()
                stopped = proc.returncode is not None
                if not stopped:
                    proc.kill()
                    await proc.wait()
    assert stopped, "core did not stop on SIGTERM:\n" + "\n".join(core.raw[-20:])
    # Peer misbehaviour never shows as a traceback or a crash of the transport.
    said = "\n".join(core.raw)
    assert "Traceback" not in said and "Task was destroyed" not in said, said[-3000:]
    assert "Internal Server Error" not in said and '"exception"' not in said, said[-3000:]


class _Slave(SimSlaveEA):
    """A slave terminal whose fills can be waited for."""

    changed: trio.Event

    def _store(self, command_id: str, result: m.Result) -> None:
        super()._store(command_id, result)
        changed = getattr(self, "changed", None)
        self.changed = trio.Event()
        if changed is not None:
            changed.set()

    async def wait_fill(self, trade_id: str) -> None:
        while not fills(self)[trade_id]:
            if not hasattr(self, "changed"):
                self.changed = trio.Event()
            await self.changed.wait()


class Honest:
    """Agent ``agent-a`` with master 9001 and slave 51001 on it, streaming to Core."""

    def __init__(
        self,
        link: GrpcAgentLink,
        agent: Agent,
        master: SimMasterEA,
        slave: _Slave,
        slave_scope: trio.CancelScope,
    ) -> None:
        self.link, self.agent, self.master, self.slave = link, agent, master, slave
        self.slave_scope = slave_scope
        """Cancel: the slave's terminal goes away from agent-a."""
        self.latencies_ms: list[float] = []

    async def copy(self, symbol: str = "XAUUSD") -> str:
        """One trade opened on the master and filled on the slave; its latency kept."""
        started = time.perf_counter()
        trade = await self.master.open(symbol, Side.BUY, 0.5)
        await self.slave.wait_fill(trade)
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        return trade


async def start_agent(
    nursery: trio.Nursery, core: CoreProcess, agent_id: str, listener: MemoryPipeListener
) -> tuple[GrpcAgentLink, Agent]:
    link = GrpcAgentLink("127.0.0.1", core.port, agent_id, token=TOKENS[agent_id])
    await nursery.start(link.run)
    await link.connected.wait()
    clock = SystemClock()
    agent = Agent(link, listener, clock, AgentConfig(agent_id=agent_id), DeliverySettings(), MemoryLedger())
    await nursery.start(agent.run)
    return link, agent


async def start_honest(nursery: trio.Nursery, core: CoreProcess) -> Honest:
    listener = MemoryPipeListener()
    link, agent = await start_agent(nursery, core, "agent-a", listener)
    clock = SystemClock()
    market = SimMarket(random.Random(1))
    slave = _Slave("51001", slave_broker(1, market, random.Random(2)), listener.connect, clock.now_ms)
    master = master_terminal("9001", market, 3, 4, listener.connect, clock.now_ms)
    start = len(core.events)
    scope = trio.CancelScope()

    async def run_slave(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await slave.run(task_status=task_status)

    await nursery.start(run_slave)
    await nursery.start(master.run)
    for account in ("51001", "9001"):
        await core.until(lambda e, a=account: _online(e, a), start)  # type: ignore[misc]
    honest = Honest(link, agent, master, slave, scope)
    await honest.copy()  # warmed up: the first copy pays for imports and caches
    honest.latencies_ms.clear()
    return honest


def _online(event: dict[str, Any], account: str) -> bool:
    return event.get("event") == "core_handshake_evaluated" and event.get("account_id") == account


def measure(name: str, core: CoreProcess, honest: Honest, baseline_ms: list[float], **extra: Any) -> None:
    """Core's memory and the copy latency before and under the abuse, logged and kept in the report."""
    rss, peak = core.memory_mb()
    under = honest.latencies_ms
    row = {
        "test": name,
        "core": "baseline" if BASELINE else "this",
        "core_rss_mb": round(rss, 1),
        "core_peak_rss_mb": round(peak, 1),
        "copy_ms_before": round(max(baseline_ms), 1) if baseline_ms else None,
        "copy_ms_under_p50": round(statistics.median(under), 1) if under else None,
        "copy_ms_under_max": round(max(under), 1) if under else None,
        "copies_under": len(under),
        **extra,
    }
    log.info("split_abuse_measure", **row)
    report = os.environ.get("ECHO_SPLIT_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


class _RawBytes(CodecBase):
    """A hostile peer's codec: whatever bytes it likes, as protobuf."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


def hello(agent_id: str, token: str | None = None) -> bytes:
    return pb.AgentMessage(hello=pb.AgentHello(
        agent_id=agent_id, protocol_version=1, supports_lossless_delivery=True,
        token=TOKENS.get(agent_id, "") if token is None else token,
    )).SerializeToString()  # fmt: skip


def online(agent_id: str, hs: m.Handshake, at_ms: int | None = None) -> bytes:
    at = int(time.time() * 1000) if at_ms is None else at_ms
    return conv.agent_message(m.AccountOnline(agent_id, hs, at)).SerializeToString()


def quotes(account: str) -> bytes:
    now = int(time.time() * 1000)
    q = m.Quotes([m.Quote("XAUUSD", 2000.0, 2000.5, now), m.Quote("GER30", 15000.0, 15001.0, now)])
    return conv.agent_message(m.FromAccount(account, q, now)).SerializeToString()


# ------------------------------------------------------------------------------------------- ownership


async def test_another_agent_cannot_take_a_live_account_trade_as_its_master_or_reuse_its_id(
    tmp_path: Path,
) -> None:
    """agent-b (its own valid token) announces the honest Agent's slave and master: both stay where they
    are, the claims are refused and logged; its copy of the master opens a trade: refused, nothing opened.
    agent-b naming itself agent-a is refused; agent-a's id reused while it is connected is refused as a
    warning and the honest stream stays up."""
    with trio.fail_after(60):
        async with trio_asyncio.open_loop(), core_process(tmp_path) as core, trio.open_nursery() as nursery:
            honest = await start_honest(nursery, core)
            await honest.copy()
            baseline = list(honest.latencies_ms)
            honest.latencies_ms.clear()

            listener = MemoryPipeListener()
            await start_agent(nursery, core, "agent-b", listener)
            clock = SystemClock()
            market = SimMarket(random.Random(7))
            fake_slave = _Slave(
                "51001", slave_broker(1, market, random.Random(8)), listener.connect, clock.now_ms
            )
            fake_master = master_terminal("9001", market, 9, 10, listener.connect, clock.now_ms)
            start = len(core.events)
            nursery.start_soon(fake_slave.run)
            nursery.start_soon(fake_master.run)
            moved_or_refused = ("core_account_claim_refused", "core_account_moved")
            for account in ("51001", "9001"):
                await core.until(lambda e, a=account: e.get("event") in moved_or_refused  # type: ignore[misc]
                                 and e.get("account_id") == a, start)  # fmt: skip
            fake = await fake_master.open(
                "XAUUSD", Side.SELL, 2.0
            )  # as the master: no master trade behind it
            await core.until(lambda e: e.get("trade_id") == fake or (e.get("event") == "core_message_refused"
                             and e.get("account_id") == "9001"), start)  # fmt: skip

            # agent-b presenting itself as agent-a; agent-a's own id (and token) a second time
            impostor = GrpcAgentLink("127.0.0.1", core.port, "agent-a", token=TOKENS["agent-b"])
            twin = GrpcAgentLink("127.0.0.1", core.port, "agent-a", token=TOKENS["agent-a"])
            for link in (impostor, twin):
                nursery.start_soon(link.run)
                await link.failed.wait()
            for _ in range(3):
                await honest.copy("GER30")
            measure("claims_and_impostors", core, honest, baseline)

            assert not core.logged("core_account_moved")
            claims = core.logged("core_account_claim_refused", agent_id="agent-b", owner="agent-a")
            assert {e["account_id"] for e in claims} == {"51001", "9001"}
            assert core.logged("core_message_refused", account_id="9001", agent_id="agent-b")
            assert fills(fake_slave) == {} and len(fills(honest.slave)) == 5
            assert "PERMISSION_DENIED" in impostor.last_error
            assert "ALREADY_EXISTS" in twin.last_error
            refused = core.logged("grpc_agent_refused", agent_id="agent-a")
            assert len(refused) >= 2 and all(e["level"] == "warning" and e["peer"] for e in refused)
            assert not core.logged("grpc_agent_disconnected", agent_id="agent-a")
            nursery.cancel_scope.cancel()


async def test_a_terminal_that_moved_before_its_old_agent_noticed_moves_once_it_does(tmp_path: Path) -> None:
    """Slave 51001's terminal comes up at agent-b while agent-a still serves it: refused, kept; when agent-a
    sees its terminal go, the account moves to agent-b and the master's next trade is filled there."""
    with trio.fail_after(60):
        async with trio_asyncio.open_loop(), core_process(tmp_path) as core, trio.open_nursery() as nursery:
            honest = await start_honest(nursery, core)
            listener = MemoryPipeListener()
            await start_agent(nursery, core, "agent-b", listener)
            clock = SystemClock()
            moved = _Slave("51001", honest.slave.broker, listener.connect, clock.now_ms)
            start = len(core.events)
            nursery.start_soon(moved.run)
            await core.until(lambda e: e.get("event") == "core_account_claim_refused", start)
            honest.slave_scope.cancel()
            await core.until(
                lambda e: e.get("event") == "core_account_moved" and e["to_agent"] == "agent-b", start
            )
            trade = await honest.master.open("XAUUSD", Side.BUY, 0.5)
            await moved.wait_fill(trade)
            assert fills(moved) == {trade: 1} and trade not in fills(honest.slave)
            nursery.cancel_scope.cancel()


async def test_a_report_dated_in_the_future_is_refused_and_locks_nothing_out(tmp_path: Path) -> None:
    """agent-b announces slave 51002 dated ten years ahead: refused; its honest announcement a moment
    later is accepted (the account is not held by the report from the future)."""
    with trio.fail_after(60):
        async with trio_asyncio.open_loop(), core_process(tmp_path) as core, trio.open_nursery() as nursery:
            honest = await start_honest(nursery, core)
            listener = MemoryPipeListener()
            link, _agent = await start_agent(nursery, core, "agent-b", listener)
            clock = SystemClock()
            slave = slave_terminal("51002", 1, SimMarket(random.Random(3)), 5, listener.connect, clock.now_ms)
            ten_years = 10 * 365 * 86_400_000
            start = len(core.events)
            await link.send(m.AccountOnline("agent-b", slave.handshake(), clock.now_ms() + ten_years))
            await link.send(m.AccountOffline("agent-b", "51002", clock.now_ms() + ten_years))
            await nursery.start(slave.run)  # the terminal itself: a handshake dated now
            await core.until(lambda e: _online(e, "51002") and e.get("status") != "REJECTED", start)
            await honest.copy()
            measure("future_report", core, honest, [])
            assert core.logged("core_report_refused", agent_id="agent-b", message="AccountOnline")
            assert not core.logged("core_handshake_stale", account_id="51002")
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------------------ boundedness


async def _stall(port: int, agent_id: str, announcements: list[bytes], told: trio.Event) -> str:
    """A stream that says hello, announces accounts and never reads again (a 64 KiB window)."""
    channel = Channel(
        "127.0.0.1", port, codec=_RawBytes(), config=Configuration(http2_stream_window_size=65535)
    )
    try:
        async with channel.request(
            "/echo.v1.AgentService/StreamBidi", Cardinality.STREAM_STREAM, bytes, bytes
        ) as stream:
            await stream.send_message(hello(agent_id))
            for raw in announcements:
                await stream.send_message(raw)
            await trio_asyncio.trio_as_aio(told.wait)()  # holds the stream, reads nothing
            return "held"
    except (GRPCError, StreamTerminatedError, ProtocolError, ConnectionError, StreamClosedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        channel.close()


async def test_a_stream_that_stops_reading_is_closed_within_the_write_deadline(tmp_path: Path) -> None:
    """agent-c announces 200 slaves (each answered with its registration) and stops reading: within the
    write deadline Core closes its stream, its accounts go offline, and Core's memory comes back; the
    honest Agent's copies go on."""
    with trio.fail_after(90):
        async with trio_asyncio.open_loop(), core_process(tmp_path) as core, trio.open_nursery() as nursery:
            honest = await start_honest(nursery, core)
            await honest.copy()
            baseline = list(honest.latencies_ms)
            honest.latencies_ms.clear()
            rss_before, _ = core.memory_mb()
            clock = SystemClock()
            market = SimMarket(random.Random(11))
            accounts = [str(60000 + i) for i in range(200)]
            announcements = [online("agent-c", _many_symbols(a, market, clock)) for a in accounts]
            told = trio.Event()
            start = len(core.events)
            nursery.start_soon(trio_asyncio.aio_as_trio(_stall), core.port, "agent-c", announcements, told)
            await core.until(lambda e: _online(e, accounts[-1]), start)
            stalled_at = time.monotonic()
            gone: dict[str, Any] = {"reason": "still open"}
            with trio.move_on_after(15):  # a bound for the code before the write deadline, not a wait
                gone = await core.until(
                    lambda e: e.get("event") == "grpc_agent_disconnected" and e.get("agent_id") == "agent-c",
                    start,
                )
                await core.until(lambda e: e.get("event") == "core_account_offline"
                                 and e.get("account_id") == accounts[-1], start)  # fmt: skip
            closed_after_s = time.monotonic() - stalled_at
            for _ in range(3):
                await honest.copy()
            rss_after, _ = core.memory_mb()
            measure("stalled_stream", core, honest, baseline, closed_after_s=round(closed_after_s, 2),
                    rss_before_mb=round(rss_before, 1))  # fmt: skip
            told.set()
            offline = {e["account_id"] for e in core.logged("core_account_offline", agent_id="agent-c")}
            assert offline == set(accounts)
            assert "no write" in gone["reason"] or "queued" in gone["reason"]
            assert rss_after - rss_before < 64, (rss_before, rss_after)
            nursery.cancel_scope.cancel()


def _many_symbols(account: str, market: SimMarket, clock: SystemClock) -> m.Handshake:
    """A slave's handshake with 60 symbols: Core's answer to it is some kilobytes."""
    hs = slave_terminal(account, 1, market, account, listener_stub, clock.now_ms).handshake()
    spec = hs.symbols[0]
    specs = [replace(spec, broker_symbol=f"SYM{i}.x", canonical_symbol=f"SYM{i}") for i in range(60)]
    return replace(hs, symbols=specs)


async def listener_stub() -> trio.abc.Stream:  # a terminal here is only asked for its handshake
    raise AssertionError("not connected")


async def _raw_call(port: int, path: str, frames: list[bytes], *, end: bool = True) -> str:
    """Raw gRPC frames (5-byte prefix included) on one call; how it ended."""
    channel = Channel("127.0.0.1", port, codec=_RawBytes())
    try:
        async with channel.request(path, Cardinality.STREAM_STREAM, bytes, bytes) as stream:
            await stream.send_request(end=not frames and end)
            h2 = stream._stream
            for i, frame in enumerate(frames):
                await h2.send_data(frame, end_stream=end and i == len(frames) - 1)
            stream._end_done = stream._end_done or (end and bool(frames))  # sent by hand, past grpclib
            while (await stream.recv_message()) is not None:
                pass
            return "ended"
    except (GRPCError, StreamTerminatedError, ProtocolError, ConnectionError, StreamClosedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        channel.close()


def frame(message: bytes, *, compressed: bool = False, size: int | None = None) -> bytes:
    n = len(message) if size is None else size
    return bytes([1 if compressed else 0]) + n.to_bytes(4, "big") + message


async def test_oversized_and_malformed_streams_are_refused_unread_and_logged_once(tmp_path: Path) -> None:
    """Four 50 MB hellos at once: refused before they are read (Core's peak memory stays bounded). A
    stream closed before any message, a compressed frame, a Ping without a request, a stream that never
    says hello, a hello naming no Agent: each refused and logged once with the peer, no traceback."""
    big = frame(b"\x0a" + b"\xff" * 50_000_000, size=50_000_001)
    with trio.fail_after(90):
        async with trio_asyncio.open_loop(), core_process(tmp_path) as core, trio.open_nursery() as nursery:
            honest = await start_honest(nursery, core)
            await honest.copy()
            baseline = list(honest.latencies_ms)
            honest.latencies_ms.clear()
            _, peak_before = core.memory_mb()
            call = trio_asyncio.aio_as_trio(_raw_call)
            stream = "/echo.v1.AgentService/StreamBidi"
            ended: list[str] = []

            async def one(frames: list[bytes], path: str = stream, end: bool = True) -> None:
                with trio.move_on_after(10):  # a bound for the code before the hello deadline
                    ended.append(await call(core.port, path, frames, end=end))

            async with trio.open_nursery() as big_ones:
                for _ in range(4):
                    big_ones.start_soon(one, [big])
                with trio.move_on_after(20):  # a bound for the code that reads them in full
                    await core.until(
                        lambda _e: len(core.logged("grpc_agent_refused", reason="over the")) >= 4
                    )
                # the senders wait for a window Core never opens (grpclib's client does not give up on
                # a reset stream): Core is done with them
                big_ones.cancel_scope.cancel()
            await honest.copy()
            _, peak_big = core.memory_mb()
            await one([])  # closed before any message
            await one([frame(hello("agent-b"), compressed=True)])
            await one([], "/echo.v1.AgentService/Ping")
            await one([frame(pb.AgentMessage(hello=pb.AgentHello(agent_id="")).SerializeToString())])
            await one([frame(hello("x" * 1_000_000))])  # a 1 MB agent id
            await one([], end=False)  # never says hello
            await honest.copy()
            measure("oversized_hello", core, honest, baseline, peak_before_mb=round(peak_before, 1),
                    peak_after_big_mb=round(peak_big, 1))  # fmt: skip
            refused = core.logged("grpc_agent_refused")
            reasons = [e["reason"] for e in refused]
            assert sum("over the limit" in r for r in reasons) == 5, reasons  # 4 x 50 MB, the 1 MB id
            for why in ("stream closed before any message", "compressed", "Ping without a request",
                        "starts with AgentHello", "no hello within"):  # fmt: skip
                assert sum(why in r for r in reasons) == 1, (why, reasons)
            assert all(e["peer"].startswith("127.0.0.1:") and len(e["agent_id"]) <= 80 for e in refused)
            assert peak_big - peak_before < 64, (peak_before, peak_big)
            nursery.cancel_scope.cancel()


FLOOD = """
import asyncio, sys, time
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase

class Raw(CodecBase):
    __content_subtype__ = "proto"
    def encode(self, message, message_type): return message
    def decode(self, data, message_type): return data

async def main(port, seconds, *messages):
    first, rest = [bytes.fromhex(x) for x in messages[:2]], bytes.fromhex(messages[2])
    deadline = time.monotonic() + float(seconds)
    sent = streams = 0
    while time.monotonic() < deadline:  # cut off: back at once, as a flooder would
        channel = Channel("127.0.0.1", int(port), codec=Raw())
        streams += 1
        try:
            path = "/echo.v1.AgentService/StreamBidi"
            async with channel.request(path, Cardinality.STREAM_STREAM, bytes, bytes) as s:
                for raw in first:
                    await s.send_message(raw)
                while time.monotonic() < deadline:
                    for _ in range(100):
                        await s.send_message(rest)
                    sent += 100
                await s.end()
        except Exception:
            pass
        finally:
            channel.close()
    print(sent, streams, flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_quote_flood_is_shed_and_live_copies_go_on(tmp_path: Path) -> None:
    """agent-b floods quotes for its own slave as fast as a process can send them for 4 s, reconnecting
    when cut off: Core sheds what is over the rate (logged, counted), ends a stream that keeps flooding,
    and the honest master's trades are copied meanwhile."""
    script = tmp_path / "flood.py"
    script.write_text(FLOOD, encoding="utf-8")
    with trio.fail_after(60):
        async with trio_asyncio.open_loop(), core_process(tmp_path) as core, trio.open_nursery() as nursery:
            honest = await start_honest(nursery, core)
            for _ in range(3):
                await honest.copy()
            baseline = list(honest.latencies_ms)
            honest.latencies_ms.clear()
            clock = SystemClock()
            hs = slave_terminal(
                "52001", 1, SimMarket(random.Random(2)), 6, listener_stub, clock.now_ms
            ).handshake()
            args = [hello("agent-b").hex(), online("agent-b", hs).hex(), quotes("52001").hex()]
            start = len(core.events)
            flood = await trio.lowlevel.open_process(
                [sys.executable, str(script), str(core.port), "4", *args],
                stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
            await core.until(lambda e: _online(e, "52001"), start)
            copies = 0
            while flood.returncode is None and copies < 20:
                await honest.copy()
                copies += 1
            assert flood.stdout is not None
            said = b""
            async for chunk in flood.stdout:
                said += chunk
            await flood.wait()
            sent, streams = (int(x) for x in said.split())
            shed = core.logged("grpc_agent_shed", agent_id="agent-b")
            cut = core.logged("grpc_bad_agent_stream", agent_id="agent-b", error="flooding")
            measure(
                "quote_flood", core, honest, baseline, quotes_sent=sent, streams=streams, cut_off=len(cut)
            )
            assert sent > 0 and shed and "over the rate" in shed[0]["reason"], (sent, shed)
            assert cut and streams >= len(cut)
            assert copies >= 1 and len(fills(honest.slave)) == 4 + copies
            nursery.cancel_scope.cancel()


async def _ping(port: int, empty: bool) -> str:
    frames = [] if empty else [frame(pb.PingRequest(agent_id="p", sent_at_ms=1).SerializeToString())]
    return await _raw_call(port, "/echo.v1.AgentService/Ping", frames)


async def test_a_ping_flood_beside_a_stuck_stream_leaves_core_alive(tmp_path: Path) -> None:
    """A stream that says hello and then neither reads nor writes, and 1,200 Pings (every tenth without a
    request) from 30 connections at once: Core answers or refuses each, stays up, copies go on."""
    with trio.fail_after(90):
        async with trio_asyncio.open_loop(), core_process(tmp_path) as core, trio.open_nursery() as nursery:
            honest = await start_honest(nursery, core)
            await honest.copy()
            baseline = list(honest.latencies_ms)
            honest.latencies_ms.clear()
            told = trio.Event()
            nursery.start_soon(trio_asyncio.aio_as_trio(_stall), core.port, "agent-c", [], told)
            outcomes: list[str] = []

            async def pings(n: int, offset: int) -> None:
                for i in range(n):
                    outcomes.append(await trio_asyncio.aio_as_trio(_ping)(core.port, (offset + i) % 10 == 0))

            async with trio.open_nursery() as flood:
                for k in range(30):
                    flood.start_soon(pings, 40, k)
                await honest.copy()
            told.set()
            await honest.copy()
            measure("ping_flood", core, honest, baseline, pings=len(outcomes),
                    answered=outcomes.count("ended"))  # fmt: skip
            assert len(outcomes) == 1200 and core.proc.returncode is None
            assert all(o == "ended" or "INVALID_ARGUMENT" in o or "RESOURCE_EXHAUSTED" in o for o in outcomes)
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------------------ the Agent


async def test_the_agents_reconnect_delay_starts_over_after_a_healthy_stream() -> None:
    """Refused three times the delay doubles; after a stream that stayed up it is back to the least."""
    port = free_port()
    with trio.fail_after(30):
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            hub = GrpcCoreHub("127.0.0.1", port, agent_tokens={"agent-a": "right-token-0123456"})
            await nursery.start(hub.serve)
            core = Core(hub, MemoryStore(), SystemClock(), CoreConfig())
            await nursery.start(core.run)
            link = GrpcAgentLink("127.0.0.1", port, "agent-a", token="wrong-token-0123456")
            link.reconnect_min_s, link.healthy_s = 0.01, 0.0
            nursery.start_soon(link.run)
            while len(link.delays) < 3:
                await link.failed.wait()
                link.failed = trio.Event()
            link.token = "right-token-0123456"
            await link.connected.wait()
            refused = list(link.delays)
            assert hub.disconnect("agent-a")
            await link.failed.wait()  # the stream ended
            await link.connected.wait()
            assert refused[:3] == [0.01, 0.02, 0.04]
            assert link.delays[len(refused)] == 0.01, list(link.delays)
            nursery.cancel_scope.cancel()
