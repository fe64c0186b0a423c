"""Copy latency of the all-in-one copier, measured from outside: ``echo-copier run --role all`` as its own
process (SQLite journal, ``synchronous`` FULL by default), and in this process one simulated master and
``--slaves`` simulated slaves on its socket. The master opens one trade at a time; each sample is from the
master writing its intent line to a slave reading the ``execute_order`` line (``first``: the first slave
to read it, ``last``: the fan-out complete). A pause between trades lets the results settle, so this is
the latency of an idle copier, not of one under load (``make demo-big`` shows that).

Prints JSON with p50/p99/max/mean in milliseconds and the copier process's CPU seconds. Usage:
``python bench/bench_copy.py [--trades 300] [--slaves 15] [--synchronous FULL|NORMAL] [--pause 0.02]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from echo.adapters.pipe.unix import connect_unix
from echo.domain.types import Side
from echo.sim.accounts import master_ids, slave_ids
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.profiles import master_broker, slave_broker
from echo.sim.slave import SimSlaveEA


def _stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {
        "n": len(v),
        "p50": round(v[len(v) // 2], 3),
        "p99": round(v[min(len(v) - 1, int(len(v) * 0.99))], 3),
        "max": round(v[-1], 3),
        "mean": round(statistics.fmean(v), 3),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


async def _wait_ready(proc: trio.Process) -> None:
    assert proc.stderr is not None
    seen = b""
    while b"copying" not in seen:
        chunk = await proc.stderr.receive_some()
        if not chunk:
            raise SystemExit(f"the copier ended: {seen.decode(errors='replace')}")
        seen += chunk


async def open_copier(config: Path) -> trio.Process:
    """``echo-copier run --role all`` under ``config`` as its own process (its log on a pipe: ``_wait_ready``,
    then ``_drain``)."""
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "echo", "run", "--role", "all", "--config", str(config)],
        stderr=subprocess.PIPE,
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def start_terminals(
    nursery: trio.Nursery,
    market: SimMarket,
    rng: random.Random,
    connect: Callable[[], Awaitable[trio.abc.Stream]],
    on_execute: Callable[[str, str, int], None],
    slave_accounts: list[str],
    master_id: str = master_ids(1)[0],
    master_seed: int = 3,
) -> SimMasterEA:
    """A simulated master and its slaves (broker profiles by position) on ``connect``, running; returns the
    master once Core has evaluated every one's handshake."""
    slaves = [
        SimSlaveEA(
            account,
            slave_broker(i, market, random.Random(rng.random())),
            connect,
            now_ms,
            on_execute_received=on_execute,
        )
        for i, account in enumerate(slave_accounts)
    ]
    master = SimMasterEA(master_id, master_broker(market, random.Random(master_seed)), connect, now_ms, rng)
    for terminal in [*slaves, master]:
        await nursery.start(terminal.run)
    while not all(t.feedback_ms for t in [*slaves, master]):  # noqa: ASYNC110 (every handshake evaluated)
        await trio.sleep(0.01)
    return master


async def _drain(proc: trio.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.receive_some():
        pass


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    sock, db = workdir / "echo.sock", workdir / "echo.db"
    config = workdir / "echo.toml"
    config.write_text(
        f'[agent]\nsocket_path = "{sock}"\n'
        f'[store]\nurl = "sqlite:///{db}"\nsynchronous = "{args.synchronous}"\n'
        '[log]\nlevel = "warning"\n'
    )
    copier = await open_copier(config)
    received: dict[str, list[int]] = defaultdict(list)
    complete: dict[str, trio.Event] = defaultdict(trio.Event)

    def on_execute(trade_id: str, _account: str, t_ns: int) -> None:
        received[trade_id].append(t_ns)
        if len(received[trade_id]) == args.slaves:
            complete[trade_id].set()

    async def connect() -> trio.abc.Stream:
        return await connect_unix(str(sock))

    cpu = 0.0
    rng = random.Random(1)
    market = SimMarket(random.Random(2))
    try:
        await _wait_ready(copier)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, copier)
            nursery.start_soon(market.run)
            master = await start_terminals(nursery, market, rng, connect, on_execute, slave_ids(args.slaves))
            await trio.sleep(0.5)
            first: list[float] = []
            last: list[float] = []
            for n in range(args.warmup + args.trades):
                trade_id = await master.open("XAUUSD", Side.BUY if n % 2 else Side.SELL, 0.1)
                with trio.fail_after(10):
                    await complete[trade_id].wait()
                written = master.intent_written_ns[trade_id]
                if n >= args.warmup:
                    first.append((min(received[trade_id]) - written) / 1e6)
                    last.append((max(received[trade_id]) - written) / 1e6)
                await master.wait_all_acked()
                await master.close(trade_id)
                await master.wait_all_acked()
                await trio.sleep(args.pause)
            cpu = _cpu_seconds(copier.pid)
            nursery.cancel_scope.cancel()
    finally:
        copier.send_signal(signal.SIGTERM)
        await copier.wait()
    return {
        "slaves": args.slaves,
        "trades": args.trades,
        "synchronous": args.synchronous,
        "first_slave_ms": _stats(first),
        "fanout_complete_ms": _stats(last),
        "copier_cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--slaves", type=int, default=15)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between trades")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        result = trio.run(bench, args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
