"""Copying goes on while etcd is paused or dead; the last good configuration stays in force, the watch comes
back by itself, and a change made after etcd returns reaches the next trade. Real clock and servers."""

from __future__ import annotations

from collections import Counter

import pytest
import trio
from structlog.testing import capture_logs

from echo.app.root import open_config
from echo.domain.config import CoreConfig
from echo.domain.types import Side
from tests.backends import etcd_instance
from tests.e2e.world import CLI, World, e2e_config, fills, start_world

pytestmark = [pytest.mark.e2e, pytest.mark.etcd]


async def lots_of(w: World, trade_id: str) -> set[float | None]:
    return {d.lot_size for d in await w.copier.store.decisions(trade_id)}


async def test_etcd_paused_then_killed_and_restarted_mid_traffic() -> None:
    with etcd_instance() as etcd:
        await trio.run_process(
            [*CLI, "config", "--config", etcd.url, "set", "core.fixed_lot", "0.1"], capture_stdout=True
        )
        config = e2e_config(core=CoreConfig(fixed_lot=0.1))
        with trio.fail_after(90), capture_logs() as logs:
            async with open_config(etcd.url) as source, trio.open_nursery() as nursery:
                w = await start_world(nursery, 5, config=config, config_source=source)
                copier = w.copier
                slave = await w.add_slave("51001", 0)
                master = await w.add_master("9001")
                await w.online("9001", "51001")
                trades = [await master.open("XAUUSD", Side.BUY, 0.5)]

                etcd.pause()  # the config server hangs: copying does not care
                trades.append(await master.open("GER30", Side.SELL, 0.5))
                await master.wait_all_acked()
                await copier.core.wait_for(lambda: copier.core.stats.get("copied") == 2)
                etcd.resume()

                etcd.kill()  # and dies: the watch breaks, the last good configuration stays
                trades.append(await master.open("XAUUSD", Side.SELL, 0.5))
                await master.wait_all_acked()
                await copier.core.wait_for(lambda: copier.core.stats.get("copied") == 3)
                await trio.to_thread.run_sync(etcd.start)  # back, same data and port

                await trio.run_process(
                    [*CLI, "config", "--config", etcd.url, "set", "core.fixed_lot", "0.3"],
                    capture_stdout=True,
                )
                await copier.core.wait_for(lambda: copier.core.config.fixed_lot == 0.3)
                trades.append(await master.open("XAUUSD", Side.BUY, 0.5))
                await master.wait_all_acked()
                await copier.core.wait_for(lambda: copier.core.stats.get("copied") == 4)
                for t in trades:
                    await master.close(t)
                await master.wait_all_acked()
                await w.settled()
                assert fills(slave) == Counter({t: 1 for t in trades})
                assert slave.broker.open_orders() == []
                assert [await lots_of(w, t) for t in trades] == [{0.1}, {0.1}, {0.1}, {0.3}]
                nursery.cancel_scope.cancel()
        events = [e["event"] for e in logs]
        assert "config_source_unavailable" in events and "config_source_back" in events
