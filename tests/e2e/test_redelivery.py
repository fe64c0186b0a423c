"""Re-delivery seen from the slave terminal, with the whole copier (Core, Agent, the in-process pipe) and a
simulated master and slave: when a command line is lost, or the terminal answers ``RETRY``, the command
comes again once, numbered past every earlier copy (PROTOCOL.md X13, X13a), and at the time the delivery
settings say. Virtual clock: the timing is exact (to the millisecond the clocks round to)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise

import pytest
import trio
import trio.testing

from echo.domain import messages as m
from echo.domain.config import AgentConfig, Config, DeliverySettings
from echo.pipe.codec import AGENT_TO_EA, Decoded, decode_line, encode
from tests.e2e.world import start_world

pytestmark = pytest.mark.e2e

ACK_TIMEOUT_MS, BACKOFF_MS = 1000, 300
COMMAND_TYPES = (b'"type":"execute_order"', b'"type":"close_order"', b'"type":"modify_order"')


@dataclass(frozen=True)
class Seen:
    at_ms: int
    attempt: int


class FirstCopyTrouble(trio.abc.Stream):
    """The slave terminal's end of its connection. Records every command line that reaches it (when, which
    attempt) and spoils the first copy of each command: ``lose`` drops it, ``retry`` answers it with a
    ``pipe_delivery_ack`` RETRY in the terminal's place."""

    def __init__(self, inner: trio.abc.Stream, mode: str, seen: dict[str, list[Seen]]) -> None:
        self.inner, self.mode, self.seen = inner, mode, seen
        self._rx = b""
        self._send_lock = trio.Lock()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            await self.inner.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            data = await self.inner.receive_some()
            if not data:
                return b""
            *lines, self._rx = (self._rx + bytes(data)).split(b"\n")
            kept = [line + b"\n" for line in lines if not await self._spoiled(line)]
            if kept:
                return b"".join(kept)

    async def _spoiled(self, line: bytes) -> bool:
        if not any(t in line[:40] for t in COMMAND_TYPES):
            return False
        ev = decode_line(line, AGENT_TO_EA)
        assert isinstance(ev, Decoded), ev
        cmd = ev.payload
        assert isinstance(cmd, m.ExecuteOrder | m.CloseOrder | m.ModifyOrder)
        first = cmd.command_id not in self.seen
        self.seen[cmd.command_id].append(Seen(round(trio.current_time() * 1000), cmd.attempt))
        if not first:
            return False
        if self.mode == "retry":
            ack = m.PipeDeliveryAck(cmd.command_id, cmd.trace_id, m.DeliveryStatus.RETRY, "not ready")
            async with self._send_lock:
                await self.inner.send_all(encode(ack, round(trio.current_time() * 1000)))
        return True

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def copy_with_trouble(mode: str, seed: int) -> dict[str, list[Seen]]:
    """Four trades from one master to one slave whose first copy of every command is spoiled; returns what
    the slave's end saw, per command_id."""
    config = Config(
        agent=AgentConfig(agent_id="agent-redelivery", ledger_url="memory://"),
        delivery=DeliverySettings(ack_timeout_ms=ACK_TIMEOUT_MS, retry_backoff_ms=BACKOFF_MS),
    )
    seen: dict[str, list[Seen]] = defaultdict(list)

    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, seed, config=config)
            core = w.core

            async def troubled_connect() -> trio.abc.Stream:
                return FirstCopyTrouble(await w.listener.connect(), mode, seen)

            slave = await w.add_slave("51001", 0, connect=troubled_connect)
            master = await w.add_master("9001")
            await w.online("9001", "51001")
            await master.run_script(4, max_open=2, pace=0.5)
            await w.settled()
            assert slave.broker.open_orders() == []
            assert core.stats.get("gave_up", 0) == 0
            nursery.cancel_scope.cancel()
    assert len(seen) >= 8, "every trade opens and closes at the slave"
    return seen


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_lost_command_line_comes_again_once_with_a_higher_attempt(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    seen = await copy_with_trouble("lose", seed)
    for command_id, copies in seen.items():
        attempts = [c.attempt for c in copies]
        assert attempts[0] == 1, (command_id, copies)
        assert attempts == sorted(set(attempts)), f"an attempt seen twice or out of order: {copies}"
        assert len(copies) >= 2, "the lost first copy was delivered again"
        gaps = [b.at_ms - a.at_ms for a, b in pairwise(copies)]
        # the copy after the lost one: ack timeout plus backoff, and never a second one moments later
        assert abs(gaps[0] - (ACK_TIMEOUT_MS + BACKOFF_MS)) <= 1, (command_id, copies)
        assert min(gaps) >= ACK_TIMEOUT_MS - 1, (command_id, copies)


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_retry_ack_brings_the_command_back_after_retry_backoff_ms(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    seen = await copy_with_trouble("retry", seed)
    for command_id, copies in seen.items():
        assert [c.attempt for c in copies[:2]] == [1, 2], (command_id, copies)
        assert abs(copies[1].at_ms - copies[0].at_ms - BACKOFF_MS) <= 1, (command_id, copies)
        attempts = [c.attempt for c in copies]
        assert attempts == sorted(set(attempts)), copies
