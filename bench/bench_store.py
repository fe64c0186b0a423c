"""Latency of ``SqliteStore.write(batch)`` for one realistic fan-out: a master open copied to 15 slaves
(1 trade + 15 commands + 15 decisions + 16 events), with synchronous FULL and NORMAL.

Prints JSON: p50/p99/max in microseconds per mode. Usage: ``python bench/bench_store.py [--n 2000]
[--warmup 200] [--dir DIR]`` (DIR defaults to a temporary directory; put it on the disk you care about).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

# runnable as a plain script from anywhere: put the repository root on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echo.adapters.store.sqlite import SqliteStore
from echo.domain.ids import uuid7
from echo.ports.store import Batch, CommandRow, DecisionRow, EventRow, TradeRow

SLAVES = 15


def fanout_batch(now_ms: int) -> Batch:
    def uid() -> str:
        return uuid7(now_ms, os.urandom(10))

    trade_id = uid()
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
            uid(),
            now_ms,
            "trade_opened",
            trade_id=trade_id,
            trace_id=trace_id,
            data='{"master":"51234567","ticket":1,"symbol":"XAUUSD.m","side":"BUY","lots":1.25,"price":2345.67}',
        )
    )
    for i in range(SLAVES):
        account = f"6100{i:04d}"
        command_id = uid()
        payload = (
            f'{{"op":"execute","command_id":"{command_id}","trade_id":"{trade_id}","symbol":"XAUUSDm",'
            f'"side":"BUY","lots":0.5,"sl":2330.0,"tp":2380.0,"magic":20240101,"max_slippage_points":30}}'
        )
        b.commands.append(CommandRow(command_id, trade_id, account, "execute", trace_id, payload, now_ms))
        b.decisions.append(
            DecisionRow(
                uid(),
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
            EventRow(uid(), now_ms, "command_sent", trade_id, account, command_id, trace_id, payload)
        )
    return b


def pct(sorted_us: list[float], p: float) -> float:
    return sorted_us[min(len(sorted_us) - 1, round(p / 100 * (len(sorted_us) - 1)))]


async def measure(path: Path, synchronous: str, n: int, warmup: int) -> dict[str, float]:
    store = SqliteStore.open(path, synchronous=synchronous)
    try:
        base = time.time_ns() // 1_000_000
        batches = [fanout_batch(base + i) for i in range(warmup + n)]
        for batch in batches[:warmup]:
            await store.write(batch)
        samples: list[float] = []
        for batch in batches[warmup:]:
            t0 = time.perf_counter_ns()
            await store.write(batch)
            samples.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        await store.aclose()
    samples.sort()
    return {
        "p50_us": round(pct(samples, 50), 1),
        "p99_us": round(pct(samples, 99), 1),
        "max_us": round(samples[-1], 1),
        "mean_us": round(statistics.fmean(samples), 1),
    }


async def main(n: int, warmup: int, directory: str | None) -> dict[str, object]:
    out: dict[str, object] = {
        "batch": {"trades": 1, "commands": SLAVES, "decisions": SLAVES, "events": SLAVES + 1},
        "n": n,
        "warmup": warmup,
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(dir=directory) as d:
        for mode in ("FULL", "NORMAL"):
            out[mode] = await measure(Path(d) / f"bench-{mode.lower()}.db", mode, n, warmup)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    print(json.dumps(trio.run(main, args.n, args.warmup, args.dir), indent=2))
