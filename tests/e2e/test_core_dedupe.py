"""Core's dedupe window: trade ids are remembered for ``core.dedupe_window_ms`` (by their UUIDv7 time), so
memory stays bounded; anything older for a trade that is not open is refused, never copied. The test plays
the Agent on the in-process transport; Core's clock is set by hand."""

from __future__ import annotations

import pytest
import trio

from echo.adapters.store.memory import MemoryStore
from echo.adapters.transport.inproc import InProcTransport
from echo.domain import messages as m
from echo.domain.config import CoreConfig
from echo.domain.ids import uuid7
from echo.domain.types import Role, Side
from echo.ports.transport import AgentLink
from echo.services.core.service import Core

pytestmark = pytest.mark.e2e

DAY = 86_400_000
T0 = 1_764_000_000_000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class HandClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now


def intent(trade_id: str) -> m.TradeIntent:
    return m.TradeIntent(trade_id, TRACE, "EURUSD", Side.BUY, 0.1, 1.1, 7, 100)


async def ack_for(link: AgentLink, trade_id: str) -> m.TradeIntentAck:
    while True:
        msg = await link.receive()
        ack = msg.message if isinstance(msg, m.ToAccount) else None
        if isinstance(ack, m.TradeIntentAck) and ack.trade_id == trade_id:
            return ack


async def test_old_trade_ids_are_refused_and_forgotten() -> None:
    clock = HandClock(T0)
    transport = InProcTransport()
    core = Core(transport.hub(), MemoryStore(), clock, CoreConfig(dedupe_window_ms=DAY))
    async with trio.open_nursery() as nursery:
        await nursery.start(core.run)
        link = await transport.connect("agent-1")
        await link.send(m.AccountOnline("agent-1", m.Handshake("9001", Role.MASTER, m.PROTOCOL_VERSION), T0))

        fresh = uuid7(T0 - 1000, bytes(10))
        await link.send(m.FromAccount("9001", intent(fresh), T0))
        assert (await ack_for(link, fresh)).status is m.AckStatus.OK
        await link.send(m.FromAccount("9001", intent(fresh), T0))
        assert (await ack_for(link, fresh)).status is m.AckStatus.DUPLICATE

        stale = uuid7(T0 - 2 * DAY, bytes(10))
        await link.send(m.FromAccount("9001", intent(stale), T0))
        ack = await ack_for(link, stale)
        assert ack.status is m.AckStatus.REJECTED and "dedupe_window" in ack.message
        close = m.TradeClose(uuid7(T0, bytes(10)), stale, TRACE, 100, "EURUSD", 0.1, 0.0, 1.1, 7)
        await link.send(m.FromAccount("9001", close, T0))
        assert (await ack_for(link, stale)).status is m.AckStatus.REJECTED

        # the fresh trade is still open: it is remembered whatever its age
        clock.now = T0 + 3 * DAY
        await link.send(m.FromAccount("9001", intent(fresh), clock.now))
        assert (await ack_for(link, fresh)).status is m.AckStatus.DUPLICATE
        close = m.TradeClose(uuid7(clock.now, bytes(10)), fresh, TRACE, 100, "EURUSD", 0.1, 0.0, 1.1, 7)
        await link.send(m.FromAccount("9001", close, clock.now))
        assert (await ack_for(link, fresh)).status is m.AckStatus.OK
        assert core.trades == {}

        # once closed and past the window, it is forgotten: memory does not grow with history
        newer = uuid7(clock.now, bytes(10))
        clock.now += 2 * Core.PRUNE_EVERY_MS
        await link.send(m.FromAccount("9001", intent(newer), clock.now))
        assert (await ack_for(link, newer)).status is m.AckStatus.OK
        assert core.remembered[0] == 1
        await link.send(m.FromAccount("9001", intent(fresh), clock.now))
        assert (await ack_for(link, fresh)).status is m.AckStatus.REJECTED
        nursery.cancel_scope.cancel()
