"""Split mode's backlog: what waits in Core's gRPC hub (answers not read yet, messages to an Agent not written
yet) counts as Core being behind, for admission and for the re-send timers; several messages go out in one
stream write, framed exactly as one by one."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from echo.adapters.clock import TrioClock
from echo.adapters.store.memory import MemoryStore
from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.grpc import framed, take_batch
from echo.adapters.transport.grpc_guard import Limits
from echo.adapters.transport.grpc_hub import GrpcCoreHub
from echo.adapters.transport.grpc_service import _Conn
from echo.adapters.transport.inproc import InProcTransport
from echo.domain import messages as m
from echo.domain.config import CoreConfig, RouterConfig
from echo.domain.ids import uuid7
from echo.domain.types import Side
from echo.services.core.router import Router
from echo.services.core.service import Core


def _near(seconds: float) -> Any:
    return pytest.approx(seconds, abs=1e-9)


class _Transport:
    def is_closing(self) -> bool:
        return False


def _connected(hub: GrpcCoreHub, agent_id: str) -> _Conn:
    conn = _Conn(agent_id, "127.0.0.1:1", _Transport(), Limits(), 0.0)
    hub.outboxes[agent_id] = conn
    return conn


def _drop(n: int) -> m.DropCommand:
    return m.DropCommand("51001", f"command-{n}", "test")


def test_several_messages_in_one_write_are_framed_as_each_alone() -> None:
    messages = [conv.core_message(_drop(n)) for n in range(3)]
    alone = b"".join(
        struct.pack("?", False) + struct.pack(">I", len(body)) + body
        for body in (msg.SerializeToString() for msg in messages)
    )  # grpclib's framing of one message (grpclib.stream.send_message)
    assert framed(messages) == alone


async def test_the_hub_counts_unread_answers_and_unwritten_messages_as_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = GrpcCoreHub("127.0.0.1", 0)
    first, second = _connected(hub, "agent-1"), _connected(hub, "agent-2")
    assert hub.behind_s() == _near(0.0)
    # an answer that arrived and that Core has not taken from its inbox yet
    await hub.deliver("agent-1", m.AccountOffline("agent-1", "51001", 1))
    await trio.sleep(0.3)
    assert hub.behind_s() == hub.behind_s("agent-2") == _near(0.3)
    assert len(await hub.receive_many(16)) == 1
    assert hub.behind_s() == _near(0.0)
    # messages to agent-1 not written to its stream yet: behind for agent-1 (and for "any"), not agent-2
    await hub.send("agent-1", _drop(1))
    await trio.sleep(0.2)
    await hub.send("agent-1", _drop(2))
    assert hub.behind_s("agent-1") == hub.behind_s() == _near(0.2)
    assert hub.behind_s("agent-2") == _near(0.0)
    # the writer takes both: still behind while the write is under way, caught up once it is done
    batch = take_batch(first.outbox, first.outbox.get_nowait())
    first.taken(len(batch))
    assert len(batch) == 2 and first.outbox.empty()
    await trio.sleep(0.1)
    assert hub.behind_s("agent-1") == _near(0.3)
    first.writing_since = None
    assert hub.behind_s("agent-1") == _near(0.0)
    # a stream that ends drops what waited for it: nothing of it counts any more
    await hub.send("agent-2", _drop(3))
    await trio.sleep(0.1)
    assert hub.behind_s() == _near(0.1)
    second.end("test")
    assert hub.behind_s() == _near(0.0)


class _BehindHub:
    """A hub that holds a backlog of ``behind`` seconds and delivers nothing."""

    def __init__(self) -> None:
        self.behind = 0.0

    def behind_s(self, agent_id: str | None = None) -> float:
        return self.behind

    async def receive_many(self, limit: int) -> list[tuple[str, m.AgentToCore]]:
        await trio.sleep_forever()
        raise AssertionError


TRACE = "0af7651916cd43dd8448eb211c80319c"


def _open(trade_id: str) -> m.AgentToCore:
    return m.FromAccount("9001", m.TradeIntent(trade_id, TRACE, "EURUSD", Side.BUY, 0.1, 1.1, 1, 7001), 1)


def _close(trade_id: str) -> m.AgentToCore:
    close = m.TradeClose(
        str(uuid7(1764063000500, bytes(10))), trade_id, TRACE, 7001, "EURUSD", 0.1, 0.0, 1.1, 1,
    )  # fmt: skip
    return m.FromAccount("9001", close, 1)


async def test_opens_are_turned_away_while_the_hub_is_max_behind_ms_behind_and_closes_never(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rejected: list[str] = []

    def reject(agent_id: str, msg: m.AgentToCore, worker_id: int, depth: int) -> list[str]:
        assert isinstance(msg, m.FromAccount)
        rejected.append(type(msg.message).__name__)
        return []

    async def finish(tx: list[str]) -> None:
        await trio.sleep_forever()  # a journal that never writes: nothing leaves the queues

    r: Router[list[str]] = Router(
        RouterConfig(worker_pool_size=2, queue_depth_max=128, max_behind_ms=250),
        apply=lambda items: [],
        finish=finish,
        reject_busy=reject,
        trade_of_command={}.get,
    )
    hub = _BehindHub()
    ids = [str(uuid7(1764063000000 + i, i.to_bytes(10, "big"))) for i in range(4)]
    async with trio.open_nursery() as nursery:
        await nursery.start(r.run, hub)
        hub.behind = 0.2
        r.dispatch([("a", _open(ids[0]))])
        await trio.testing.wait_all_tasks_blocked()
        assert not rejected and r.behind_s() == _near(0.2)
        hub.behind = 0.25
        r.dispatch([("a", _open(ids[1])), ("a", _close(ids[2]))])
        assert rejected == ["TradeIntent"] and r.stats.rejected_behind == 1
        hub.behind = 0.0
        r.dispatch([("a", _open(ids[3]))])
        assert rejected == ["TradeIntent"]
        nursery.cancel_scope.cancel()


async def _written(tx: list[str]) -> None:
    await trio.lowlevel.checkpoint()


async def test_a_burst_in_one_group_is_not_admitted_past_max_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Opens admitted and not yet applied count as in flight: a burst that reaches the router as one group
    is cut at the bound even though none of it has sent a command yet."""
    rejected: list[str] = []

    def reject(agent_id: str, msg: m.AgentToCore, worker_id: int, depth: int) -> list[str]:
        rejected.append(type(msg).__name__)
        return []

    r: Router[list[str]] = Router(
        RouterConfig(worker_pool_size=2, queue_depth_max=128, max_in_flight=10),
        apply=lambda items: [],
        finish=_written,
        reject_busy=reject,
        trade_of_command={}.get,
        in_flight=lambda: 4,
    )
    ids = [str(uuid7(1764063000000 + i, i.to_bytes(10, "big"))) for i in range(12)]
    r.dispatch([("a", _open(t)) for t in ids])
    assert len(rejected) == 6 and r.stats.rejected_in_flight == 6  # 4 in flight + 6 waiting = 10
    async with trio.open_nursery() as nursery:
        for worker_id in range(2):
            nursery.start_soon(r._worker, worker_id)
        await trio.testing.wait_all_tasks_blocked()
        # applied: they are Core's in-flight count's now (still 4 here), no longer waiting
        r.dispatch([("a", _open(str(uuid7(1764063000100, bytes(10)))))])
        assert len(rejected) == 6
        nursery.cancel_scope.cancel()


async def test_a_due_resend_waits_while_its_agents_link_is_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = Core(InProcTransport().hub(), MemoryStore(), TrioClock(), CoreConfig())
    behind = {"agent-1": 0.5, "agent-2": 0.0}
    core.router._hub_behind = lambda agent_id: behind.get(agent_id or "", 0.0)
    state: Any = core.ctx.state
    try:
        state.accounts.update(
            {"51001": SimpleNamespace(agent_id="agent-1"), "51002": SimpleNamespace(agent_id="agent-2")}
        )
        state.pending.update(
            {"c1": SimpleNamespace(account_id="51001"), "c2": SimpleNamespace(account_id="51002")}
        )
        assert core._not_behind(1_000, ["c1", "c2", "gone"]) == ["c2", "gone"]
        assert core.stats["resends_deferred"] == 1
        # c1 comes due again once its Agent's link has had the time it was behind
        behind["agent-1"] = 0.0
        now, due = await core._timers.next_due()
        assert due == ["c1"] and now >= 1_500
        assert core._not_behind(now, due) == ["c1"]
        # a short backlog still puts a timer off by at least RESEND_DEFER_MIN_MS
        behind["agent-2"] = 0.06
        assert core._not_behind(now, ["c2"]) == []
        later, due = await core._timers.next_due()
        assert due == ["c2"] and later - now >= Core.RESEND_DEFER_MIN_MS
    finally:  # the Core's gauges are read by every later scrape in this process: leave it empty
        state.accounts.clear()
        state.pending.clear()
