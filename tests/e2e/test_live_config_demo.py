"""The demo on the real backends: state in PostgreSQL, configuration in etcd. A policy changed with
`echo-copier config set` while trades are being copied takes effect on the next trade, and the receipts
show it. Real clock and real processes for the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from rich.console import Console

from echo.adapters.store.postgres import PostgresStore
from echo.app.demo import DemoOptions, demo_ok, run_demo
from echo.app.root import Copier
from tests.backends import etcd_server, postgres_schema
from tests.e2e.world import CLI

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.etcd]


async def test_demo_on_postgres_and_etcd_applies_a_policy_change_to_the_next_trade(tmp_path: Path) -> None:
    with etcd_server() as etcd_url, postgres_schema() as store_url:
        initial = tmp_path / "initial.toml"
        initial.write_text("[core]\nfixed_lot = 0.1\n[delivery]\nack_timeout_ms = 1000\n", encoding="utf-8")
        await trio.run_process(
            [*CLI, "config", "--config", etcd_url, "import", str(initial)], capture_stdout=True
        )
        running: list[Copier] = []
        changed_after: list[int] = []

        async def keep(copier: Copier) -> None:
            running.append(copier)

        async def change_policy_before_the_third_trade(account: str, opened: int) -> None:
            if opened != 2:
                return
            core = running[0].core
            changed_after.append(core.stats["trades"])
            await trio.run_process(
                [*CLI, "config", "--config", etcd_url, "set", "core.fixed_lot", "0.3"], capture_stdout=True
            )
            # the master's next trade waits until Core has applied the change it read from etcd
            await core.wait_for(lambda: core.config.fixed_lot == 0.3)

        opts = DemoOptions(
            masters=1,
            slaves=2,
            trades=16,
            seed=3,
            workdir=tmp_path,
            store_url=store_url,
            config_spec=etcd_url,
            pace=0.1,
            max_open=1,
            on_start=keep,
            before_trade=change_policy_before_the_third_trade,
        )
        with trio.fail_after(120):
            summary = await run_demo(opts, Console(quiet=True))
        store = await PostgresStore.open(store_url)
        try:
            lots = [d.lot_size for d in await store.decisions(limit=1000) if d.decision == "copy"]
        finally:
            await store.aclose()
    assert demo_ok(summary), summary
    assert (summary["lost"], summary["duplicates"], summary["open_after"]) == (0, 0, 0)
    assert changed_after == [2], changed_after
    assert summary["copied"] == summary["expected_copies"] == 32, summary
    # two trades on both slaves before the change, every one decided after it at the new size
    assert lots == [0.1] * 4 + [0.3] * 28, lots
