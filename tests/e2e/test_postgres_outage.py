"""The copier on PostgreSQL while its database connection is cut, twice, mid-traffic: Core retries the
journal write, reconnects, and nothing is lost or duplicated. Real clock (the store runs in a thread)."""

from __future__ import annotations

from collections import Counter

import psycopg
import pytest
import trio

from echo.adapters.store.postgres import PostgresStore, split_url
from echo.domain.types import Side
from tests.backends import postgres_schema
from tests.e2e.world import fills, start_world

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def cut_connections(url: str) -> int:
    conninfo, schema = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"echo-store-{schema}",),
        ).fetchall()
    return len(rows)


async def test_cut_database_connections_lose_and_duplicate_nothing() -> None:
    with postgres_schema() as url:
        store = await PostgresStore.open(url)
        try:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    w = await start_world(nursery, store=store)
                    slaves = [await w.add_slave(f"5100{i}", i) for i in range(1, 4)]
                    master = await w.add_master("9001")
                    await w.online("9001", "51001", "51002", "51003")
                    trades: list[str] = []
                    for n in range(12):
                        if n in (3, 8):
                            assert await trio.to_thread.run_sync(cut_connections, url) == 1
                        trades.append(await master.open("XAUUSD", Side.BUY if n % 2 else Side.SELL, 0.5))
                        await trio.sleep(0.02)
                    await master.wait_all_acked()
                    for t in trades:
                        await master.close(t)
                    await master.wait_all_acked()
                    await w.settled()
                    for s in slaves:
                        assert fills(s) == Counter({t: 1 for t in trades}), s.account_id
                        assert s.broker.open_orders() == []
                    assert {t.status for t in await store.trades(limit=100)} == {"closed"}
                    assert w.copier.core.stats.get("journal_retries", 0) >= 1
                    nursery.cancel_scope.cancel()
        finally:
            await store.aclose()
