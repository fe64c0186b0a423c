"""Copy latency and CPU of split mode, measured from outside: Core (``run --role core``, SQLite journal,
``synchronous`` FULL) and two Agents (``run --role agent``), each its own process, and in this process the
simulated terminals: one master and the first half of ``--slaves`` on the first Agent, the other half on
the second. The master opens one trade at a time and the results settle between trades (an idle copier,
as in ``bench_copy.py``): each sample is from the master writing its intent to the first slave reading the
``execute_order`` line, and to the last one (the fan-out complete).

Prints JSON: this machine's floor measured first in the same run (``bench/floor.py``), split mode's
p50/p99 in milliseconds with the p50s as multiples of the split copy floor (two Unix socket hops, a gRPC
round trip and a durable commit), CPU seconds per 1,000 copies for each process (idle between trades
included), and, unless ``--no-all-in-one``, the same trades through the all-in-one copier for comparison.
Usage: ``python bench/bench_split.py [--trades 300] [--slaves 15] [--pause 0.02]``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor  # bench/floor.py, beside this file
from bench_copy import (
    Copies,
    _stats,
    bench,
    cpu_seconds,
    drain,
    idle_copies,
    kill_processes,
    rss_mb,
    start_terminals,
    stop_processes,
    wait_ready,
)

from echo.adapters.pipe.unix import connect_unix
from echo.sim.accounts import slave_ids
from echo.sim.market import SimMarket

Connect = Callable[[], Awaitable[trio.abc.Stream]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def count_log_events(path: Path) -> dict[str, int]:
    """Lines of a JSON log file counted by event, the most frequent first."""
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = str(json.loads(line).get("event", "?"))
            except ValueError:
                event = "(not json)"
            counts[event] = counts.get(event, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class SplitCopier:
    """Core and ``agents`` Agents as processes in ``workdir``; ``sockets[i]``: Agent ``i``'s terminals."""

    def __init__(self, workdir: Path, agents: int = 2, synchronous: str = "FULL") -> None:
        self.workdir, self.synchronous = workdir, synchronous
        self.listen = f"127.0.0.1:{free_port()}"
        self.sockets = [workdir / f"agent-{i}.sock" for i in range(agents)]
        self.processes: dict[str, trio.Process] = {}
        self.tails: dict[str, bytearray] = {}
        """The last words on each process's stderr."""

    def connect(self, agent: int) -> Connect:
        path = str(self.sockets[agent])

        async def connect() -> trio.abc.Stream:
            return await connect_unix(path)

        return connect

    async def start(self, nursery: trio.Nursery) -> None:
        core_conf = self.workdir / "core.toml"
        core_conf.write_text(
            f'[store]\nurl = "sqlite:///{self.workdir / "echo.db"}"\nsynchronous = "{self.synchronous}"\n'
            f'[split]\nlisten = "{self.listen}"\n'
            f'[log]\nlevel = "warning"\nformat = "json"\nfile = "{self.workdir / "core.log"}"\n'
        )
        core = await trio.lowlevel.open_process(
            [sys.executable, "-m", "echo", "run", "--role", "core", "--config", str(core_conf)],
            stderr=subprocess.PIPE,
        )
        self.processes["core"] = core
        await wait_ready(core)
        nursery.start_soon(drain, core, self.tails.setdefault("core", bytearray()))
        for i, sock in enumerate(self.sockets):
            conf = self.workdir / f"agent-{i}.toml"
            conf.write_text(
                f'[agent]\nagent_id = "bench-agent-{i}"\nsocket_path = "{sock}"\n'
                f'ledger_url = "sqlite:///{self.workdir / f"agent-{i}-ledger.db"}"\n'
                f'[split]\ncore = "{self.listen}"\n'
                f'[log]\nlevel = "warning"\nformat = "json"\nfile = "{self.workdir / f"agent-{i}.log"}"\n'
            )
            agent = await trio.lowlevel.open_process(
                [sys.executable, "-m", "echo", "run", "--role", "agent", "--config", str(conf)],
                stderr=subprocess.PIPE,
            )
            self.processes[f"agent-{i}"] = agent
            await wait_ready(agent, b"serving terminals")
            nursery.start_soon(drain, agent, self.tails.setdefault(f"agent-{i}", bytearray()))

    def log_events(self) -> dict[str, dict[str, int]]:
        """Each process's warnings and errors so far, counted by event (its JSON log file)."""
        return {name: count_log_events(self.workdir / f"{name}.log") for name in self.processes}

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(p.pid) for name, p in self.processes.items()}

    def rss(self) -> dict[str, float]:
        return {name: rss_mb(p.pid) for name, p in self.processes.items()}

    async def stop(self) -> None:
        """SIGTERM every process and wait (call it while their logs are still drained)."""
        await stop_processes(list(self.processes.values()))

    async def kill(self) -> None:
        await kill_processes(list(self.processes.values()))


async def bench_split(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    split = SplitCopier(workdir, synchronous=args.synchronous)
    copies = Copies(args.slaves)
    half = (args.slaves + 1) // 2
    rng = random.Random(1)
    market = SimMarket(random.Random(2))
    try:
        async with trio.open_nursery() as nursery:
            await split.start(nursery)
            nursery.start_soon(market.run)
            master = await start_terminals(
                nursery, market, rng, split.connect(0), copies.on_execute, slave_ids(args.slaves),
                slave_connect=lambda i: split.connect(0 if i < half else 1),
            )  # fmt: skip
            await trio.sleep(0.5)
            cpu_before, own_before = split.cpu(), own_cpu_seconds()
            first, last = await idle_copies(master, copies, args.trades, args.warmup, args.pause)
            cpu_after, own_after = split.cpu(), own_cpu_seconds()
            rss = split.rss()
            await split.stop()
            nursery.cancel_scope.cancel()
    finally:
        await split.kill()
    n_copies = args.trades * args.slaves
    per_1000 = {name: round((cpu_after[name] - cpu_before[name]) / n_copies * 1000, 3) for name in cpu_after}
    per_1000["terminals"] = round((own_after - own_before) / n_copies * 1000, 3)
    return {
        "first_slave_ms": _stats(first),
        "fanout_complete_ms": _stats(last),
        "cpu_s_per_1000_copies": per_1000,
        "copier_cpu_s_per_1000_copies": round(sum(v for k, v in per_1000.items() if k != "terminals"), 3),
        "rss_mb": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--slaves", type=int, default=15)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between trades")
    parser.add_argument("--no-all-in-one", action="store_true", help="skip the all-in-one comparison")
    args = parser.parse_args()
    if args.slaves < 2 or args.trades < 1:
        raise SystemExit("bench_split: --slaves must be >= 2 (one on each Agent) and --trades >= 1")
    machine = floor.measure()
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        split: dict[str, Any] = trio.run(bench_split, args, Path(tmp))
    for key in ("first_slave_ms", "fanout_complete_ms"):
        split[key]["p50_x_floor"] = floor.ratio(split[key]["p50"], machine["split_copy_floor_us"])
    result: dict[str, Any] = {
        "floor": machine,
        "slaves": args.slaves,
        "trades": args.trades,
        "synchronous": args.synchronous,
        "split": split,
    }
    if not args.no_all_in_one:
        with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
            aio: dict[str, Any] = trio.run(bench, args, Path(tmp), args.slaves)
        for key in ("first_slave_ms", "fanout_complete_ms"):
            aio[key]["p50_x_floor"] = floor.ratio(aio[key]["p50"], machine["copy_floor_us"])
        result["all_in_one"] = aio
        result["split_vs_all_in_one"] = {
            "first_slave_p50_extra_ms": round(
                split["first_slave_ms"]["p50"] - aio["first_slave_ms"]["p50"], 3
            ),
            "cpu_per_copy_ratio": round(
                split["copier_cpu_s_per_1000_copies"] / aio["copier_cpu_s_per_1000_copies"], 2
            )
            if aio["copier_cpu_s_per_1000_copies"]
            else None,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
