"""Sustained load: 6 masters x 15 slaves (every slave follows every master) at rising rates, through the
all-in-one copier and through split mode (Core and two Agents), each its own process; the simulated
terminals run in this process. Each master opens trades evenly spaced and closes each one 0.5 s after
opening it; a rate is slave orders per second (master opens per second x 15; as many closes follow).

Each step lasts ``--step-seconds``; a copy's latency is from the master writing its intent to the slave
reading the ``execute_order`` line, and a copy not read by the end of the step plus one second counts as late
(it lands in the percentiles, which are then null with ``p50_late`` / ``p99_late``). Stepping goes past the
knee (the highest rate at which at least 90% of the offered orders were delivered) and stops after the first
step at twice the knee or more (after the first step that collapses, fewer than half delivered, when there
is no knee yet), or at the last rate; a step whose masters cannot write lasts at most twice its time. Then
the load stops and, ``--after-seconds`` later, the benchmark reports what was delivered meanwhile, the
positions still open on the slaves and the terminals that were disconnected. Each step and the after-load
figures give the master lines sent again (after a RETRY / ERR_BROKER_BUSY or an ack timeout) and the
terminals' reconnections; the after-load figures add, from the copier's log, Core's re-sends, the events
it turned away busy and the terminals cut off.

Prints JSON: this machine's floor measured first in the same run (``bench/floor.py``), per mode and step the
offered and delivered rates, copy p50/p99, the CPU share of each process and its RSS; the highest rate with
p99 <= ``--p99-ms`` and nearly everything delivered (``sustained_orders_per_s``); and the after-load figures,
with each process's warnings and errors of the whole run counted by event. Usage: ``python bench/bench_load.py
[--rates 30,60,120,240,480,960,1440,1920] [--step-seconds 10] [--modes all-in-one,split]``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor  # bench/floor.py, beside this file
from bench_copy import (
    cpu_seconds,
    drain,
    kill_processes,
    open_copier,
    rss_mb,
    slave_counts,
    start_terminals,
    stop_processes,
    wait_ready,
)
from bench_split import SplitCopier, count_log_events

from echo.adapters.pipe.unix import connect_unix
from echo.domain.types import Side
from echo.sim.accounts import master_ids, slave_ids
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA
from echo.sim.slave import SimSlaveEA

MASTERS, SLAVES = 6, 15
HOLD_S = 0.5
LATE_MS = 1e9
"""A copy not read in time: larger than any real latency, so it lands in the percentiles."""


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(len(v) * q))], 2)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Load:
    """The terminals' side of one run: when every copy was read, and the trades each step opened."""

    def __init__(self) -> None:
        self.read_ns: dict[str, list[int]] = {}
        self.reads = 0

    def on_execute(self, trade_id: str, _account: str, t_ns: int) -> None:
        self.read_ns.setdefault(trade_id, []).append(t_ns)
        self.reads += 1


async def _master_loop(
    master: SimMasterEA, rate_per_master: float, until: float, opened: list[str], nursery: trio.Nursery
) -> None:
    """Open a trade every ``1 / rate_per_master`` seconds until ``until`` (trio time), each closed 0.5 s
    after it opened."""
    interval = 1 / rate_per_master
    next_at = trio.current_time() + random.random() * interval
    n = 0
    while next_at < until:
        await trio.sleep_until(next_at)
        trade_id = await master.open("XAUUSD", Side.BUY if n % 2 else Side.SELL, 0.01)
        opened.append(trade_id)
        nursery.start_soon(_close_later, master, trade_id)
        n += 1
        next_at += interval


async def _close_later(master: SimMasterEA, trade_id: str) -> None:
    await trio.sleep(HOLD_S)
    await master.close(trade_id)


async def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    processes: dict[str, trio.Process] = {}
    tails: dict[str, bytearray] = {}
    split: SplitCopier | None = None
    load = Load()
    rng = random.Random(1)
    market = SimMarket(random.Random(2))
    masters: list[SimMasterEA] = []
    slaves: list[SimSlaveEA] = []
    steps: list[dict[str, Any]] = []
    after: dict[str, Any] = {}
    try:
        async with trio.open_nursery() as nursery:
            if mode == "split":
                split = SplitCopier(workdir, synchronous=args.synchronous)
                await split.start(nursery)
                processes, tails = split.processes, split.tails
                connects = [split.connect(0), split.connect(1)]
            else:
                sock = workdir / "echo.sock"
                config = workdir / "echo.toml"
                config.write_text(
                    f'[agent]\nsocket_path = "{sock}"\n'
                    f'[store]\nurl = "sqlite:///{workdir / "echo.db"}"\nsynchronous = "{args.synchronous}"\n'
                    f'[log]\nlevel = "warning"\nformat = "json"\nfile = "{workdir / "copier.log"}"\n'
                )
                copier = await open_copier(config)
                processes = {"copier": copier}
                await wait_ready(copier)
                tails = {"copier": bytearray()}
                nursery.start_soon(drain, copier, tails["copier"])

                async def connect() -> trio.abc.Stream:
                    return await connect_unix(str(sock))

                connects = [connect, connect]
            nursery.start_soon(market.run)
            half = MASTERS // 2
            for i, master_id in enumerate(master_ids(MASTERS)):
                side = 0 if i < half else 1
                masters.append(
                    await start_terminals(
                        nursery, market, rng, connects[side], load.on_execute,
                        slave_ids(SLAVES) if i == 0 else [], master_id=master_id, master_seed=3 + i,
                        slave_connect=lambda j: connects[0 if j < (SLAVES + 1) // 2 else 1],
                        slaves_out=slaves,
                    )
                )  # fmt: skip
            await trio.sleep(1.0)
            for rate in args.rates:
                step = await _step(rate, args, masters, slaves, load, processes, nursery)
                steps.append(step)
                print(json.dumps({"mode": mode, **step}), file=sys.stderr, flush=True)
                knee = _knee(steps)
                if (knee is not None and rate >= 2 * knee) or (
                    knee is None and step["delivered_per_s"] < 0.5 * step["offered_per_s"]
                ):
                    break  # twice the knee (or collapsed before any): what follows the load is the point now
            after = await _after_load(args, masters, slaves, load, processes)
            after["exited_during_run"] = {
                name: {"exit": proc.returncode, "stderr_tail": tails[name][-600:].decode(errors="replace")}
                for name, proc in processes.items()
                if proc.returncode is not None
            }
            stopping = time.monotonic()
            await stop_processes(list(processes.values()))
            after["stop_s"] = round(time.monotonic() - stopping, 1)
            after["log_events"] = (
                split.log_events()
                if split is not None
                else {"copier": count_log_events(workdir / "copier.log")}
            )
            after["overload"] = _summary(after["log_events"])
            nursery.cancel_scope.cancel()
    finally:
        await kill_processes(list(processes.values()))
    sustained = [
        s["offered_per_s"]
        for s in steps
        if s["copy_p99_ms"] is not None
        and s["copy_p99_ms"] <= args.p99_ms
        and s["delivered_per_s"] >= 0.9 * s["offered_per_s"]
    ]
    return {
        "mode": mode,
        "steps": steps,
        "sustained_orders_per_s": max(sustained) if sustained else None,
        "knee_orders_per_s": _knee(steps),
        "after_load": after,
    }


def _reconnects(masters: list[SimMasterEA], slaves: list[SimSlaveEA]) -> int:
    return sum(max(t.connections - 1, 0) for t in [*masters, *slaves])


async def _step(
    rate: int,
    args: argparse.Namespace,
    masters: list[SimMasterEA],
    slaves: list[SimSlaveEA],
    load: Load,
    processes: dict[str, trio.Process],
    nursery: trio.Nursery,
) -> dict[str, Any]:
    per_master = rate / SLAVES / MASTERS
    opened: list[str] = []
    cpu_before = {name: cpu_seconds(p.pid) for name, p in processes.items()}
    resends_before = sum(m.resends for m in masters)
    reconnects_before = _reconnects(masters, slaves)
    own_before, reads_before, wall = _own_cpu(), load.reads, time.monotonic()
    until = trio.current_time() + args.step_seconds
    with trio.move_on_at(until + args.step_seconds):  # masters whose writes block stop at twice the step
        async with trio.open_nursery() as openers:
            for master in masters:
                openers.start_soon(_master_loop, master, per_master, until, opened, nursery)
    seconds = time.monotonic() - wall
    reads = load.reads - reads_before
    cpu = {name: round((cpu_seconds(p.pid) - cpu_before[name]) / seconds, 2) for name, p in processes.items()}
    cpu["terminals"] = round((_own_cpu() - own_before) / seconds, 2)
    rss = {name: rss_mb(p.pid) for name, p in processes.items()}
    await trio.sleep(1.0)  # a copy read within a second of the step's end still counts, as late as it was
    latencies: list[float] = []
    for trade_id in opened:
        written = masters[0].intent_written_ns.get(trade_id)
        if written is None:
            written = next(m.intent_written_ns[trade_id] for m in masters if trade_id in m.intent_written_ns)
        got = load.read_ns.get(trade_id, [])
        latencies.extend((t - written) / 1e6 for t in got)
        latencies.extend([LATE_MS] * (SLAVES - len(got)))
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    return {
        "rate": rate,
        "seconds": round(seconds, 1),
        "offered_per_s": round(len(opened) * SLAVES / seconds, 1),
        "delivered_per_s": round(reads / seconds, 1),
        "copy_p50_ms": p50 if p50 is not None and p50 < LATE_MS else None,
        "copy_p99_ms": p99 if p99 is not None and p99 < LATE_MS else None,
        "p50_late": p50 is not None and p50 >= LATE_MS,
        "p99_late": p99 is not None and p99 >= LATE_MS,
        "late_copies": sum(1 for v in latencies if v >= LATE_MS),
        "master_lines_resent": sum(m.resends for m in masters) - resends_before,
        "terminal_reconnects": _reconnects(masters, slaves) - reconnects_before,
        "cpu_cores": cpu,
        "rss_mb": rss,
    }


def _knee(steps: list[dict[str, Any]]) -> int | None:
    """The highest rate asked for of which at least 90% was delivered within its step."""
    held = [s["rate"] for s in steps if s["delivered_per_s"] >= 0.9 * s["offered_per_s"]]
    return max(held) if held else None


def _summary(log_events: dict[str, dict[str, int]]) -> dict[str, int]:
    """What the processes' logs say about overload, over the whole run."""
    total: dict[str, int] = {}
    for events in log_events.values():
        for key, n in events.items():
            total[key] = total.get(key, 0) + n
    return {
        "core_resends": total.get("core_command_resent", 0),
        "busy_retries": total.get("core.router.enqueue", 0),
        "agent_rewrites": total.get("agent_command_rewritten", 0),
        "terminals_cut_too_slow": total.get("agent_ea_too_slow", 0),
        "terminals_cut_stalled": total.get("agent_ea_stalled", 0),
        "grpc_links_dropped": total.get("grpc_link_down", 0),
    }


async def _after_load(
    args: argparse.Namespace,
    masters: list[SimMasterEA],
    slaves: list[SimSlaveEA],
    load: Load,
    processes: dict[str, trio.Process],
) -> dict[str, Any]:
    reads_before = load.reads
    resends_before = sum(m.resends for m in masters)
    await trio.sleep(args.after_seconds)
    return {
        "seconds": args.after_seconds,
        "delivered_per_s": round((load.reads - reads_before) / args.after_seconds, 1),
        "slave_positions_open": sum(len(s.broker.open_orders()) for s in slaves),
        "master_positions_open": sum(len(m.broker.open_orders()) for m in masters),
        "master_intents_unacked": sum(m.pending for m in masters),
        "master_lines_resent": sum(m.resends for m in masters) - resends_before,
        "master_lines_resent_whole_run": sum(m.resends for m in masters),
        "terminals_disconnected": sum(1 for t in [*masters, *slaves] if t.connections > 1),
        "terminal_reconnects": _reconnects(masters, slaves),
        "rss_mb": {name: rss_mb(p.pid) for name, p in processes.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", type=slave_counts, default=[30, 60, 120, 240, 480, 960, 1440, 1920], help="slave orders/s"
    )
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--after-seconds", type=float, default=30.0)
    parser.add_argument("--p99-ms", type=float, default=10.0)
    parser.add_argument("--modes", default="all-in-one,split")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not modes or any(m not in ("all-in-one", "split") for m in modes):
        raise SystemExit(f"bench_load: --modes is a list of all-in-one and split, got {args.modes!r}")
    result: dict[str, Any] = {"floor": floor.measure(), "masters": MASTERS, "slaves": SLAVES, "modes": []}
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
            result["modes"].append(trio.run(run_mode, mode, args, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
