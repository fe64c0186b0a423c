"""Latency and CPU of ``SqliteStore.write(batch)`` for the copier's three batch shapes, per synchronous mode:

- ``fanout``: a master open copied to 15 slaves (1 trade + 15 commands + 15 decisions + 16 events);
- ``result``: one slave's result (1 command update + 1 ticket + 1 event);
- ``group``: 15 slaves' results grouped by Core (15 command updates + 15 tickets + 15 events).

Each shape is timed over ``n`` writes after ``warmup`` untimed ones, on one store per mode: first the
fan-outs, then a group for each fan-out, then single results on the commands of fresh fan-outs (written
untimed), so every update hits a command that exists and no command is updated twice.

Prints JSON: per mode and shape, wall-clock p50/p99/max/mean and the writing thread's CPU time p50/mean,
in microseconds (CPU leaves out time spent waiting on the disk, e.g. in fsync). Usage:
``python bench/bench_store.py [--n 2000] [--warmup 200] [--dir DIR] [--modes FULL,NORMAL]`` (DIR defaults
to a temporary directory; put it on the disk you care about; ``--modes OFF`` isolates the CPU cost).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import trio

# runnable as a plain script from anywhere: put the repository root on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echo.adapters.store.sqlite import SqliteStore
from echo.domain.ids import uuid7
from echo.ports.store import (
    Batch,
    CommandRow,
    CommandUpdate,
    DecisionRow,
    EventRow,
    TicketRow,
    TradeRow,
)

SLAVES = 15
SHAPES = {
    "fanout": {"trades": 1, "commands": SLAVES, "decisions": SLAVES, "events": SLAVES + 1},
    "result": {"command_updates": 1, "tickets": 1, "events": 1},
    "group": {"command_updates": SLAVES, "tickets": SLAVES, "events": SLAVES},
}


def uid(now_ms: int) -> str:
    return uuid7(now_ms, os.urandom(10))


def fanout_batch(now_ms: int) -> Batch:
    trade_id = uid(now_ms)
    trace_id = os.urandom(16).hex()
    trade = TradeRow(
        trade_id=trade_id,
        master_account="51234567",
        master_ticket=int.from_bytes(os.urandom(4), "big"),
        symbol="XAUUSD",
        master_symbol="XAUUSD.m",
        side="BUY",
        lot_size=1.25,
        price=2345.67,
        magic_number=20240101,
        trace_id=trace_id,
        opened_at_ms=now_ms,
        stop_loss=2330.0,
        take_profit=2380.0,
    )
    b = Batch(trades=[trade])
    b.events.append(
        EventRow(
            uid(now_ms),
            now_ms,
            "trade_opened",
            trade_id=trade_id,
            trace_id=trace_id,
            data='{"master":"51234567","ticket":1,"symbol":"XAUUSD.m","side":"BUY","lots":1.25,"price":2345.67}',
        )
    )
    for i in range(SLAVES):
        account = f"6100{i:04d}"
        command_id = uid(now_ms)
        payload = (
            f'{{"op":"execute","command_id":"{command_id}","trade_id":"{trade_id}","symbol":"XAUUSDm",'
            f'"side":"BUY","lots":0.5,"sl":2330.0,"tp":2380.0,"magic":20240101,"max_slippage_points":30}}'
        )
        b.commands.append(CommandRow(command_id, trade_id, account, "execute", trace_id, payload, now_ms))
        b.decisions.append(
            DecisionRow(
                uid(now_ms),
                trade_id,
                account,
                "copy",
                "copied",
                0.5,
                '{"sizing":"multiplier","factor":0.4,"raw":0.5,"symbol":"XAUUSDm","via":"alias"}',
                now_ms,
            )
        )
        b.events.append(
            EventRow(uid(now_ms), now_ms, "command_sent", trade_id, account, command_id, trace_id, payload)
        )
    return b


def results_batch(commands: list[CommandRow], tickets: Iterator[int], now_ms: int) -> Batch:
    """What a slave's result writes, for each command: its update, the ticket it opened and an event."""
    b = Batch()
    for c in commands:
        ticket = next(tickets)
        result = (
            f'{{"command_id":"{c.command_id}","ok":true,"error_code":"NO_ERROR","ticket":{ticket},'
            f'"price":2345.71,"lots":0.5,"slippage_points":4,"executed_at_ms":{now_ms}}}'
        )
        b.command_updates.append(CommandUpdate(c.command_id, "ok", "NO_ERROR", result, now_ms))
        b.tickets.append(TicketRow(c.account_id, ticket, c.trade_id, "XAUUSDm", 0.5, now_ms))
        b.events.append(
            EventRow(
                uid(now_ms),
                now_ms,
                "command_result",
                c.trade_id,
                c.account_id,
                c.command_id,
                c.trace_id,
                result,
            )
        )
    return b


def pct(sorted_us: list[float], p: float) -> float:
    return sorted_us[min(len(sorted_us) - 1, round(p / 100 * (len(sorted_us) - 1)))]


def summary(wall_us: list[float], cpu_us: list[float]) -> dict[str, float]:
    wall_us.sort()
    cpu_us.sort()
    return {
        "p50_us": round(pct(wall_us, 50), 1),
        "p99_us": round(pct(wall_us, 99), 1),
        "max_us": round(wall_us[-1], 1),
        "mean_us": round(statistics.fmean(wall_us), 1),
        "cpu_p50_us": round(pct(cpu_us, 50), 1),
        "cpu_mean_us": round(statistics.fmean(cpu_us), 1),
    }


async def timed(store: SqliteStore, batches: list[Batch], warmup: int) -> dict[str, float]:
    for batch in batches[:warmup]:
        await store.write(batch)
    wall: list[float] = []
    cpu: list[float] = []
    for batch in batches[warmup:]:
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        await store.write(batch)
        t1 = time.perf_counter_ns()
        c1 = time.thread_time_ns()
        wall.append((t1 - t0) / 1000)
        cpu.append((c1 - c0) / 1000)
    return summary(wall, cpu)


async def measure(path: Path, synchronous: str, n: int, warmup: int) -> dict[str, dict[str, float]]:
    store = SqliteStore.open(path, synchronous=synchronous)
    tickets = itertools.count(int.from_bytes(os.urandom(3), "big") * 1000 + 1)
    base = time.time_ns() // 1_000_000
    out: dict[str, dict[str, float]] = {}
    try:
        # every batch is stamped later than the ones before it, as in the copier (ids are UUIDv7)
        total = warmup + n
        fanouts = [fanout_batch(base + i) for i in range(total)]
        out["fanout"] = await timed(store, fanouts, warmup)
        base += total
        groups = [results_batch(f.commands, tickets, base + i) for i, f in enumerate(fanouts)]
        out["group"] = await timed(store, groups, warmup)
        base += total
        more = [fanout_batch(base + i) for i in range(-(-total // SLAVES))]
        for batch in more:
            await store.write(batch)
        base += len(more)
        commands = [c for f in more for c in f.commands][:total]
        results = [results_batch([c], tickets, base + i) for i, c in enumerate(commands)]
        out["result"] = await timed(store, results, warmup)
    finally:
        await store.aclose()
    return {shape: out[shape] for shape in SHAPES}


async def main(n: int, warmup: int, directory: str | None, modes: list[str]) -> dict[str, object]:
    out: dict[str, object] = {
        "batches": SHAPES,
        "n": n,
        "warmup": warmup,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }
    with tempfile.TemporaryDirectory(dir=directory) as d:
        for mode in modes:
            out[mode] = await measure(Path(d) / f"bench-{mode.lower()}.db", mode, n, warmup)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--modes", default="FULL,NORMAL", help="comma-separated synchronous levels")
    args = parser.parse_args()
    modes = [m.strip().upper() for m in args.modes.split(",") if m.strip()]
    print(json.dumps(trio.run(main, args.n, args.warmup, args.dir, modes), indent=2))
