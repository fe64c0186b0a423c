"""The store goes away mid-traffic and comes back: a full filesystem under SQLite, a stopped PostgreSQL
server. Whatever arrived meanwhile (the masters' events, the slaves' results and acks) ends in the store
once it is back, without a restart, and nothing is copied twice.

The full disk is a real one: a small tmpfs (mounting needs root, as in CI) filled up with a file. The
PostgreSQL server is a throwaway cluster on a free port, stopped and started by the test (never the
machine's shared server)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from echo.adapters.store.memory import MemoryStore
from echo.adapters.store.postgres import PostgresStore
from echo.adapters.store.sqlite import SqliteStore
from echo.domain.types import Side
from echo.ports.store import Batch, EventRow, Store, StoreError, StoreUnavailable
from echo.services.core.service import Core
from echo.sim.master import SimMasterEA
from tests.backends import PostgresCluster, postgres_cluster, unavailable
from tests.e2e.world import World, fills, start_world

pytestmark = pytest.mark.e2e


# ------------------------------------------------------------------------------------------- full disk


@contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory`` (root only), unmounted afterwards."""
    directory.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        unavailable("tmpfs", "no mount binary on PATH")
        raise AssertionError("unreachable")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True, text=True
    )
    if done.returncode != 0:
        unavailable("tmpfs", f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until the filesystem is full."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return filler
    finally:
        os.close(fd)


async def check_the_store_matches(w: World, store: Store, trades: list[str]) -> None:
    """Every trade, its commands, slave tickets and delivery journal, as the store holds them, say what the
    terminals did: each trade closed, every command answered, every ticket closed, nothing pending."""
    slaves = [s.account_id for s in w.slaves]
    for s in w.slaves:
        assert fills(s) == Counter({t: 1 for t in trades}), s.account_id
        assert s.broker.open_orders() == [], s.account_id
    for trade_id in trades:
        trade = await store.get_trade(trade_id)
        assert trade is not None and trade.status == "closed", (trade_id, trade)
        commands = await store.commands(trade_id)
        assert [c for c in commands if c.status == "sent"] == [], trade_id
        executes = Counter(c.account_id for c in commands if c.kind == "execute" and c.status == "ok")
        assert executes == Counter(slaves), (trade_id, executes)
        tickets = await store.tickets(trade_id)
        assert {t.account_id for t in tickets} == set(slaves), trade_id
        assert [t for t in tickets if t.status != "closed"] == [], trade_id
    assert await store.journal("PENDING") == []
    journal = {j.command_id: j for j in await store.journal(None)}
    for trade_id in trades:
        for c in await store.commands(trade_id):
            j = journal[c.command_id]
            assert (j.stage, j.outcome) == ("EA_CONFIRMED", "OK"), (c.kind, j)
    assert await store.trades_with_open_tickets() == []


async def settled_and_recorded(w: World) -> None:
    """No trade and no command left in Core, and everything it applied written to the store."""
    core = w.copier.core
    await core.wait_for(lambda: not core.trades and core.in_flight == 0 and core.recorded)


async def open_some(master: SimMasterEA, n: int) -> list[str]:
    return [await master.open("XAUUSD", Side.BUY if i % 2 else Side.SELL, 0.5) for i in range(n)]


async def test_a_full_disk_then_space_again_the_store_ends_right_without_a_restart(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        store = SqliteStore.open(disk / "echo.db")
        try:
            with trio.fail_after(600):
                async with trio.open_nursery() as nursery:
                    w = await start_world(nursery, store=store)
                    for i in range(1, 4):
                        await w.add_slave(f"5100{i}", i)
                    master = await w.add_master("9001")
                    await w.online("9001", "51001", "51002", "51003")
                    core = w.copier.core
                    # the disk fills up while the slaves fill the executes: their results, the master's
                    # new trades and its closes come while nothing can be written
                    first = await open_some(master, 4)
                    await master.wait_all_acked()
                    filler = fill(disk)
                    during = await open_some(master, 2)
                    await master.close(first[0])
                    await trio.sleep(5)
                    assert core.stats.get("store_failures", 0) >= 1, core.stats
                    filler.unlink()
                    # space again; then full once more while the slaves close what the master closed
                    for t in first[1:3]:
                        await master.close(t)
                    await master.wait_all_acked()
                    filler = fill(disk)
                    await trio.sleep(5)
                    filler.unlink()
                    after = await open_some(master, 2)
                    for t in [*first[3:], *during, *after]:
                        await master.close(t)
                    await master.wait_all_acked()
                    await settled_and_recorded(w)
                    await check_the_store_matches(w, store, [*first, *during, *after])
                    nursery.cancel_scope.cancel()
        finally:
            await store.aclose()


# -------------------------------------------------------------------------------------- PostgreSQL down


class StopsTheServer:
    """The store, which stops its PostgreSQL server right after the next write that carries a command of
    the armed kind: the command leaves (it was recorded) and its result comes back to a copier whose
    database is gone."""

    def __init__(self, inner: Store, cluster: PostgresCluster) -> None:
        self._inner = inner
        self._cluster = cluster
        self.armed: str | None = None

    async def write(self, batch: Batch) -> None:
        await self._inner.write(batch)
        if self.armed is not None and any(c.kind == self.armed for c in batch.commands):
            self.armed = None
            await trio.to_thread.run_sync(self._cluster.stop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.postgres
async def test_postgresql_stopped_and_started_the_store_ends_right_without_a_restart() -> None:
    with postgres_cluster() as cluster:
        store = await PostgresStore.open(f"{cluster.url}?schema=echo")
        stopping = StopsTheServer(store, cluster)
        try:
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    w = await start_world(nursery, store=cast(Store, stopping))
                    for i in range(1, 4):
                        await w.add_slave(f"5100{i}", i)
                    master = await w.add_master("9001")
                    await w.online("9001", "51001", "51002", "51003")
                    core = w.copier.core
                    # the server stops once the first trade's executes are recorded: their fills, and the
                    # master's next trades, come while it is down
                    stopping.armed = "execute"
                    trades = await open_some(master, 4)
                    # it stays down until Core has failed to write what came in the meantime
                    await core.wait_for(lambda: core.stats.get("store_failures", 0) >= 1)
                    await trio.to_thread.run_sync(cluster.start)
                    await master.wait_all_acked()
                    await core.wait_for(lambda: core.in_flight == 0)
                    # and again once the first closes are recorded: the slaves' closes come while it is down
                    stopping.armed = "close"
                    failures = core.stats.get("store_failures", 0)
                    for t in trades:
                        await master.close(t)
                    await core.wait_for(lambda: core.stats.get("store_failures", 0) > failures)
                    await trio.to_thread.run_sync(cluster.start)
                    await master.wait_all_acked()
                    await settled_and_recorded(w)
                    await check_the_store_matches(w, store, trades)
                    nursery.cancel_scope.cancel()
        finally:
            await store.aclose()


# ------------------------------------------------------------------------------ held, then refused


class DownStore(MemoryStore):
    """A memory store that is unavailable while ``down``, and refuses its next ``refuse`` batches."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refuse = 0

    async def write(self, batch: Batch) -> None:
        if self.down:
            raise StoreUnavailable("the store is down")
        if self.refuse and batch:
            self.refuse -= 1
            raise StoreError("batch rejected: refused")
        await super().write(batch)


async def test_a_held_batch_the_store_then_refuses_is_rolled_back_and_retried_by_the_master(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A batch held through an outage that the store, once back, refuses for what it holds does not block
    the journal: it is rolled back like any refused batch, and the master's retry is copied once."""
    store = DownStore()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, store=store)
            for i in range(1, 3):
                await w.add_slave(f"5100{i}", i)
            master = await w.add_master("9001")
            await w.online("9001", "51001", "51002")
            core = w.copier.core
            store.down = True
            trade = await master.open("XAUUSD", Side.BUY, 0.5)
            await trio.sleep(3)
            assert core.stats.get("store_failures", 0) >= 1
            assert all(fills(s)[trade] == 0 for s in w.slaves)  # nothing left that was not recorded
            store.down, store.refuse = False, 1
            await master.wait_all_acked()
            await core.wait_for(lambda: core.in_flight == 0)
            await master.close(trade)
            await master.wait_all_acked()
            await settled_and_recorded(w)
            await check_the_store_matches(w, store, [trade])
            nursery.cancel_scope.cancel()


async def test_held_batches_are_written_in_order_by_the_background_retry_when_nothing_else_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = DownStore()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, store=store)
            await w.add_slave("51001", 1)
            master = await w.add_master("9001")
            await w.online("9001", "51001")
            core = w.copier.core
            trade = await master.open("XAUUSD", Side.SELL, 0.5)
            await master.wait_all_acked()
            store.down = True  # the execute's fill comes back while the store is down
            await trio.sleep(3)
            assert core.in_flight == 0 and core.stats.get("store_failures", 0) >= 1
            assert [c.status for c in await store.commands(trade)] == ["sent"]
            store.down = False
            await trio.sleep(Core.HELD_RETRY_S * 2)
            assert [c.status for c in await store.commands(trade)] == ["ok"]
            assert [t.status for t in await store.tickets(trade)] == ["open"]
            nursery.cancel_scope.cancel()


class LostReplyStore(DownStore):
    """Also: the next ``lose`` writes commit and then fail as unavailable (the server committed; its answer
    was lost with the connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = 0
        self.then_down = False

    async def write(self, batch: Batch) -> None:
        await super().write(batch)
        if self.lose and batch:
            self.lose -= 1
            self.down = self.then_down
            raise StoreUnavailable("connection lost during COMMIT")


async def test_a_write_that_committed_but_failed_is_not_written_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A write that fails as unavailable may have committed: writing it again is refused for keys that
    exist. Core finds it in the store, counts it written and sends what it produced: copied once, and the
    store right."""
    store = LostReplyStore()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            w = await start_world(nursery, store=store)
            for i in range(1, 3):
                await w.add_slave(f"5100{i}", i)
            master = await w.add_master("9001")
            await w.online("9001", "51001", "51002")
            core = w.copier.core
            store.lose = 1
            first = await master.open("XAUUSD", Side.BUY, 0.5)
            await master.wait_all_acked()
            await core.wait_for(lambda: core.in_flight == 0)
            store.lose, store.then_down = 1, True  # the next commit's answer is lost, then the store is down
            await master.close(first)
            await trio.sleep(3)
            assert store.down and core.stats.get("store_failures", 0) >= 1
            store.down = False
            second = await master.open("XAUUSD", Side.SELL, 0.3)
            await master.wait_all_acked()
            await master.close(second)
            await master.wait_all_acked()
            await settled_and_recorded(w)
            await check_the_store_matches(w, store, [first, second])
            nursery.cancel_scope.cancel()


@pytest.mark.postgres
async def test_a_stopped_server_is_unavailable_and_a_started_one_takes_the_write() -> None:
    with postgres_cluster() as cluster:
        store = await PostgresStore.open(f"{cluster.url}?schema=echo")
        try:
            batch = Batch(events=[EventRow("e1", 1, "k", None, None, None, None, "{}")])
            await trio.to_thread.run_sync(cluster.stop)
            with pytest.raises(StoreUnavailable, match="PostgreSQL unavailable"):
                await store.write(batch)
            await trio.to_thread.run_sync(cluster.start)
            await store.write(batch)
            assert [e.event_id for e in await store.events()] == ["e1"]
        finally:
            await store.aclose()


async def test_a_full_disk_is_unavailable_and_freed_space_takes_the_write(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        store = SqliteStore.open(disk / "echo.db")
        try:
            filler = fill(disk)
            rows = [EventRow(f"e{i}", i, "k", None, None, None, None, "x" * 4000) for i in range(50)]
            big = Batch(events=rows)
            with pytest.raises(StoreUnavailable, match="full"):
                await store.write(big)
            filler.unlink()
            await store.write(big)
            assert len(await store.events(limit=1000)) == 50
        finally:
            await store.aclose()
