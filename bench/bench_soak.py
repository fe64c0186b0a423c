"""Growth of the all-in-one copier over time, measured from outside: ``echo-copier run --role all`` as its own
process (SQLite store), and in this process one simulated master and ``--slaves`` simulated slaves (15 by
default) on its socket. The master opens a trade, waits until every slave has read its ``execute_order``,
closes it, and goes on with the next one (at most ``--rate`` trades a second) for ``--seconds``.

The copier's resident memory (``VmRSS``) is sampled every ``--sample`` seconds; the figure that matters is
its growth between the end of the warm-up (``--warmup`` seconds) and the end of the run. The store is
measured after the copier has stopped: the bytes its tables and indexes occupy (SQLite's ``dbstat``), in
total and per slave copy.

Prints one JSON object. Usage:
``python bench/bench_soak.py [--seconds 300] [--warmup 60] [--slaves 15] [--rate 10]``.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_copy import drain, open_copier, start_terminals, wait_ready

from echo.adapters.pipe.unix import connect_unix
from echo.domain.types import Side
from echo.sim.accounts import slave_ids
from echo.sim.market import SimMarket


def _rss_kb(pid: int) -> int:
    """Resident memory of a running process in KiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def store_bytes(db: Path) -> tuple[int, dict[str, int]]:
    """(bytes in use, bytes per table with its indexes) of a SQLite store that no process writes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        owner = dict(
            conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")
        )
        per: dict[str, int] = defaultdict(int)
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            per[owner.get(name, name)] += int(size)
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        used = int(conn.execute("PRAGMA page_count").fetchone()[0]) - int(
            conn.execute("PRAGMA freelist_count").fetchone()[0]
        )
    finally:
        conn.close()
    return used * page, dict(sorted(per.items(), key=lambda kv: -kv[1]))


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    sock, db = workdir / "echo.sock", workdir / "echo.db"
    config = workdir / "echo.toml"
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\n'
        f'[store]\nurl = "sqlite:///{db}"\nsynchronous = "NORMAL"\n'
        '[log]\nlevel = "warning"\n'
    )
    copier = await open_copier(config)
    received: dict[str, int] = defaultdict(int)
    complete: dict[str, trio.Event] = defaultdict(trio.Event)
    copies = 0

    def on_execute(trade_id: str, _account: str, _t_ns: int) -> None:
        nonlocal copies
        copies += 1
        received[trade_id] += 1
        if received[trade_id] == args.slaves:
            complete[trade_id].set()

    async def connect() -> trio.abc.Stream:
        return await connect_unix(str(sock))

    samples: list[tuple[float, int, int]] = []
    trades = 0
    at_warmup: tuple[float, int, int] | None = None
    rng = random.Random(1)
    market = SimMarket(random.Random(2))
    try:
        await wait_ready(copier)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, copier)
            nursery.start_soon(market.run)
            master = await start_terminals(nursery, market, rng, connect, on_execute, slave_ids(args.slaves))
            start = time.monotonic()
            next_sample = start
            interval = 1.0 / args.rate
            while (now := time.monotonic()) - start < args.seconds:
                if now >= next_sample:
                    samples.append((round(now - start, 1), copies, _rss_kb(copier.pid)))
                    next_sample += args.sample
                if at_warmup is None and now - start >= args.warmup:
                    at_warmup = (now - start, copies, _rss_kb(copier.pid))
                began = time.monotonic()
                trade_id = await master.open("XAUUSD", Side.BUY if trades % 2 else Side.SELL, 0.1)
                with trio.fail_after(30):
                    await complete[trade_id].wait()
                await master.wait_all_acked()
                await master.close(trade_id)
                await master.wait_all_acked()
                master.trades.pop(trade_id, None)
                complete.pop(trade_id, None)
                received.pop(trade_id, None)
                trades += 1
                await trio.sleep(max(0.0, interval - (time.monotonic() - began)))
            # the last closes reach the slaves before the copier stops
            await trio.sleep(2.0)
            end = (time.monotonic() - start, copies, _rss_kb(copier.pid))
            samples.append((round(end[0], 1), end[1], end[2]))
            nursery.cancel_scope.cancel()
    finally:
        copier.send_signal(signal.SIGTERM)
        await copier.wait()
    if at_warmup is None:
        raise SystemExit("the run ended before the warm-up did: give --seconds more than --warmup")
    used, per_table = store_bytes(db)
    after = end[1] - at_warmup[1]
    growth_kb = end[2] - at_warmup[2]
    return {
        "slaves": args.slaves,
        "seconds": round(end[0], 1),
        "trades": trades,
        "copies": copies,
        "rss_after_warmup_mb": round(at_warmup[2] / 1024, 1),
        "rss_end_mb": round(end[2] / 1024, 1),
        "rss_growth_after_warmup_mb": round(growth_kb / 1024, 2),
        "rss_kb_per_1000_copies_after_warmup": round(growth_kb * 1000 / after, 1) if after else None,
        "store_bytes": used,
        "store_kb_per_1000_copies": round(used / 1024 * 1000 / copies, 1) if copies else None,
        "store_bytes_per_slave_copy": round(used / copies) if copies else None,
        "store_bytes_by_table": per_table,
        "rss_samples": [{"s": s, "copies": c, "rss_mb": round(r / 1024, 1)} for s, c, r in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to copy")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    parser.add_argument("--slaves", type=int, default=15)
    parser.add_argument("--rate", type=float, default=10.0, help="at most this many trades a second")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="echo-soak-") as tmp:
        result = trio.run(soak, args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
