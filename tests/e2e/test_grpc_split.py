"""Split mode over real gRPC (localhost TCP): Core and an Agent joined by the gRPC transport, simulated
terminals on the Agent; trades are copied; the stream is cut and the Agent reconnects by itself and
announces its accounts again; an Agent with a wrong token is refused. Real clock (gRPC runs on asyncio)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio_asyncio
from structlog.testing import capture_logs

from echo.adapters.clock import SystemClock
from echo.adapters.ledger.memory import MemoryLedger
from echo.adapters.pipe.memory import MemoryPipeListener
from echo.adapters.store.memory import MemoryStore
from echo.adapters.transport.grpc import GrpcAgentLink, GrpcCoreHub
from echo.domain import messages as m
from echo.domain.config import AgentConfig, CoreConfig, DeliverySettings
from echo.domain.types import Side
from echo.services.agent.service import Agent
from echo.services.core.service import Core
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA
from tests.backends import free_port

pytestmark = pytest.mark.e2e


def fills(slave: SimSlaveEA) -> Counter[str]:
    return Counter(
        r.trade_id for r in slave.results.values() if isinstance(r, m.ExecutionResult) and r.success
    )


async def test_trades_are_copied_over_grpc_and_the_agent_reconnects() -> None:
    port = free_port()
    clock = SystemClock()
    listener = MemoryPipeListener()
    market = SimMarket(random.Random(1))
    with trio.fail_after(60):
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            hub = GrpcCoreHub("127.0.0.1", port, token="s3cret")
            await nursery.start(hub.serve)
            core = Core(hub, MemoryStore(), clock, CoreConfig())
            await nursery.start(core.run)
            link = GrpcAgentLink("127.0.0.1", port, "agent-grpc", token="s3cret")
            await nursery.start(link.run)
            await link.connected.wait()
            agent = Agent(
                link, listener, clock, AgentConfig(agent_id="agent-grpc"), DeliverySettings(), MemoryLedger()
            )
            await nursery.start(agent.run)
            slave = SimSlaveEA(
                "51001", slave_broker(1, market, random.Random(2)), listener.connect, clock.now_ms
            )
            master = SimMasterEA(
                "9001",
                master_broker(market, random.Random(3)),
                listener.connect,
                clock.now_ms,
                random.Random(4),
            )
            await nursery.start(slave.run)
            await nursery.start(master.run)
            await core.wait_for(
                lambda: all(a in core.accounts and core.accounts[a].online for a in ("9001", "51001"))
            )

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
