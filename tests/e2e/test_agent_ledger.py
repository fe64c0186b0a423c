"""The Agent's hop with its ack ledger, against a real SQLite ledger file and real in-memory connections;
the test plays Core on the in-process transport. Virtual clock: timeouts pass instantly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from echo.adapters.clock import TrioClock
from echo.adapters.ledger.sqlite import SqliteLedger
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.transport.inproc import InProcTransport
from echo.domain import messages as m
from echo.domain.config import AgentConfig, DeliverySettings
from echo.domain.ids import uuid7
from echo.domain.types import Role, Side
from echo.pipe.codec import AGENT_TO_EA, Decoded, LineDecoder, encode
from echo.ports.transport import CoreHub
from echo.services.agent.service import Agent

pytestmark = pytest.mark.e2e

SLAVE = "51001"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
DELIVERY = DeliverySettings(ack_timeout_ms=1000, retry_backoff_ms=500, max_retries=3)


def execute(n: int) -> m.ExecuteOrder:
    return m.ExecuteOrder(
        uuid7(1_764_000_000_000 + n, bytes(10)),
        uuid7(1_764_000_000_000, bytes(10)),
        TRACE,
        "XAUUSD.m",
        Side.BUY,
        0.1,
        7,
        "echo",
    )


class Terminal:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = LineDecoder(AGENT_TO_EA)
        self.pending: list[Decoded] = []

    @classmethod
    async def connect(cls, listener: MemoryPipeListener) -> Terminal:
        t = cls(await listener.connect())
        await t.send(m.Handshake(SLAVE, Role.SLAVE, m.PROTOCOL_VERSION))
        return t

    async def send(self, payload: object) -> None:
        await self.stream.send_all(encode(payload, 0))

    async def next(self, *types: str) -> Decoded:
        while True:
            while self.pending:
                ev = self.pending.pop(0)
                if ev.type in types:
                    return ev
            data = await self.stream.receive_some()
            assert data, "the agent closed the connection"
            for ev in self.decoder.feed(bytes(data)):
                assert isinstance(ev, Decoded), ev
                self.pending.append(ev)

    async def nothing_more(self, types: str, seconds: float) -> None:
        with trio.move_on_after(seconds):
            ev = await self.next(types)
            raise AssertionError(f"unexpected {ev.type}: {ev.payload}")


async def next_ack(hub: CoreHub) -> m.CommandAck:
    while True:
        _, msg = await hub.receive()
        if isinstance(msg, m.CommandAck):
            return msg


@asynccontextmanager
async def agent(
    path: Path, listener: MemoryPipeListener, hold_ms: int = 60_000
) -> AsyncIterator[tuple[Agent, CoreHub, InProcTransport]]:
    transport = InProcTransport()
    hub = transport.hub()
    ledger = SqliteLedger.open(path)
    try:
        async with trio.open_nursery() as nursery:
            link = await transport.connect("agent-1")
            a = Agent(link, listener, TrioClock(), AgentConfig(ledger_hold_ms=hold_ms), DELIVERY, ledger)
            await nursery.start(a.run)
            yield a, hub, transport
            nursery.cancel_scope.cancel()
    finally:
        ledger.close()


async def core_sends(hub: CoreHub, msg: m.CoreToAgent) -> None:
    await hub.send("agent-1", msg)


async def test_a_command_for_an_offline_terminal_survives_an_agent_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path, listener = tmp_path / "acks.db", MemoryPipeListener()
    cmd = execute(1)
    async with agent(path, listener) as (_, hub, _t):
        await core_sends(hub, m.ToAccount(SLAVE, cmd))
        ack = await next_ack(hub)
        assert (ack.command_id, ack.stage, ack.result) == (
            cmd.command_id,
            m.AckStage.AGENT_BUFFERED,
            m.AckResult.PENDING,
        )
    assert [e.command_id for e in SqliteLedger.open(path).load()] == [cmd.command_id]

    listener = MemoryPipeListener()
    async with agent(path, listener) as (a, hub, _t):
        assert list(a.held) == [cmd.command_id]
        term = await Terminal.connect(listener)
        # Core has sent nothing to this Agent: the command comes from the ledger.
        got = await term.next("execute_order")
        assert got.payload == cmd
        await term.send(m.PipeDeliveryAck(cmd.command_id, TRACE, m.DeliveryStatus.OK))
        ack = await next_ack(hub)
        assert (ack.stage, ack.result) == (m.AckStage.PIPE_DELIVERED, m.AckResult.OK)
        assert a.held == {}
    assert SqliteLedger.open(path).load() == []


async def test_an_unacknowledged_write_is_repeated_then_given_back_to_core(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryPipeListener()
    cmd = execute(2)
    async with agent(tmp_path / "acks.db", listener) as (a, hub, _t):
        term = await Terminal.connect(listener)
        await term.next("delivery_config")
        await core_sends(hub, m.ToAccount(SLAVE, cmd))
        start = trio.current_time()
        for _ in range(DELIVERY.max_retries):
            assert (await term.next("execute_order")).payload.command_id == cmd.command_id  # type: ignore[attr-defined]
        ack = await next_ack(hub)
        assert (ack.stage, ack.result) == (m.AckStage.AGENT_BUFFERED, m.AckResult.FAILED)
        assert "3 writes" in ack.reason
        # ack timeout + backoff after each of the three writes: 1.5 s + 2.0 s + 3.0 s
        assert trio.current_time() - start == pytest.approx(6.5, abs=0.01)
        assert a.held == {} and a.stats["rewrites"] == 2


async def test_a_result_proves_delivery_when_the_pipe_ack_is_lost(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryPipeListener()
    cmd = execute(3)
    async with agent(tmp_path / "acks.db", listener) as (a, hub, _t):
        term = await Terminal.connect(listener)
        await core_sends(hub, m.ToAccount(SLAVE, cmd))
        await term.next("execute_order")
        result = m.ExecutionResult(cmd.command_id, cmd.trade_id, TRACE, True, m.ErrorCode.NO_ERROR, ticket=5)
        await term.send(result)
        while True:
            _, msg = await hub.receive()
            if isinstance(msg, m.FromAccount) and msg.message == result:
                break
        assert a.held == {}
        await term.nothing_more("execute_order", 10)


async def test_an_ack_and_a_result_in_one_read_reach_core_in_order_after_the_ledger_let_go(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryPipeListener()
    path, cmd = tmp_path / "acks.db", execute(7)
    async with agent(path, listener) as (_a, hub, _t):
        term = await Terminal.connect(listener)
        await term.next("delivery_config")
        await core_sends(hub, m.ToAccount(SLAVE, cmd))
        await term.next("execute_order")
        result = m.ExecutionResult(cmd.command_id, cmd.trade_id, TRACE, True, m.ErrorCode.NO_ERROR, ticket=5)
        ack_line = encode(m.PipeDeliveryAck(cmd.command_id, TRACE, m.DeliveryStatus.OK), 0)
        await term.stream.send_all(ack_line + encode(result, 0))  # one write: one read at the Agent
        seen: list[object] = []
        while not seen or seen[-1] != result:
            _, msg = await hub.receive()
            if isinstance(msg, m.CommandAck):
                seen.append((msg.stage, msg.result))
            elif isinstance(msg, m.FromAccount) and msg.account_id == SLAVE:
                seen.append(msg.message)
                ledger = SqliteLedger.open(path)  # what a restart would find when Core has the result
                try:
                    assert ledger.load() == []
                finally:
                    ledger.close()
        assert seen == [(m.AckStage.PIPE_DELIVERED, m.AckResult.OK), result]


async def test_a_dropped_command_is_never_written(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    listener = MemoryPipeListener()
    dropped, kept = execute(4), execute(5)
    async with agent(tmp_path / "acks.db", listener) as (_a, hub, _t):
        await core_sends(hub, m.ToAccount(SLAVE, dropped))
        await core_sends(hub, m.ToAccount(SLAVE, kept))
        await next_ack(hub)
        await next_ack(hub)
        await core_sends(hub, m.DropCommand(SLAVE, dropped.command_id, "gave up"))
        await trio.testing.wait_all_tasks_blocked()
        term = await Terminal.connect(listener)
        assert (await term.next("execute_order")).payload == kept
        await term.send(m.PipeDeliveryAck(kept.command_id, TRACE, m.DeliveryStatus.OK))
        await term.nothing_more("execute_order", 5)


async def test_a_stale_ledger_entry_is_not_written_after_a_long_outage(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path, cmd = tmp_path / "acks.db", execute(6)
    async with agent(path, MemoryPipeListener(), hold_ms=5000) as (_, hub, _t):
        await core_sends(hub, m.ToAccount(SLAVE, cmd))
        await next_ack(hub)
    await trio.sleep(6)
    listener = MemoryPipeListener()
    async with agent(path, listener, hold_ms=5000) as (a, hub, _t):
        term = await Terminal.connect(listener)
        ack = await next_ack(hub)
        assert (ack.command_id, ack.stage, ack.result) == (
            cmd.command_id,
            m.AckStage.AGENT_BUFFERED,
            m.AckResult.FAILED,
        )
        await term.nothing_more("execute_order", 5)
        assert a.held == {}
