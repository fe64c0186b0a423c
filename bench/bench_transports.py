"""Copy latency by the way terminals reach the Agent, side by side in one run: one all-in-one copier
(``echo-copier run --role all``, its own process, SQLite journal) serving its Unix socket and
``agent.tcp_listen`` at once, and in this process one simulated master with ``--slaves`` simulated slaves
per transport (``core.follow`` keeps each master's copies on its own transport). Trades alternate between
the transports, so both see the same copier in the same state. Each sample is from the master writing its
intent line to a slave reading the ``execute_order`` line (``first`` slave, ``last``: the fan-out complete),
as in ``bench_copy.py``.

Prints JSON: per transport, p50/p99/max/mean in milliseconds; and the copier process's CPU seconds. Usage:
``python bench/bench_transports.py [--trades 200] [--slaves 5] [--synchronous FULL|NORMAL] [--pause 0.02]``.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import sys
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_copy import _cpu_seconds, _drain, _stats, _wait_ready, open_copier, start_terminals

from echo.adapters.pipe.tcp import connect_tcp
from echo.adapters.pipe.unix import connect_unix
from echo.domain.types import Side
from echo.sim.market import SimMarket
from echo.sim.master import SimMasterEA

Connect = Callable[[], Awaitable[trio.abc.Stream]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    sock, db, listen = workdir / "echo.sock", workdir / "echo.db", f"127.0.0.1:{_free_port()}"

    async def over_unix() -> trio.abc.Stream:
        return await connect_unix(sock)

    async def over_tcp() -> trio.abc.Stream:
        return await connect_tcp(listen)

    legs: dict[str, tuple[str, list[str], Connect]] = {}
    for n, (name, connect) in enumerate((("unix", over_unix), ("tcp", over_tcp))):
        slaves = [f"{51001 + 100 * n + i}" for i in range(args.slaves)]
        legs[name] = (f"{9001 + n}", slaves, connect)
    follow = ", ".join(f'"{m}" = [{", ".join(f"{s!r}" for s in ss)}]' for m, ss, _ in legs.values())
    config = workdir / "echo.toml"
    config.write_text(
        f"[core]\nfollow = {{ {follow} }}\n".replace("'", '"')
        + f'[agent]\nsocket_path = "{sock}"\ntcp_listen = "{listen}"\n'
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

    cpu = 0.0
    rng = random.Random(1)
    market = SimMarket(random.Random(2))
    first: dict[str, list[float]] = {name: [] for name in legs}
    last: dict[str, list[float]] = {name: [] for name in legs}
    try:
        await _wait_ready(copier)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, copier)
            nursery.start_soon(market.run)
            masters: dict[str, SimMasterEA] = {}
            for k, (name, (master_id, slave_ids, dial)) in enumerate(legs.items()):
                masters[name] = await start_terminals(
                    nursery, market, rng, dial, on_execute, slave_ids, master_id, master_seed=3 + k
                )
            await trio.sleep(0.5)
            for n in range(args.warmup + args.trades):
                for name, master in masters.items():  # alternating: the same copier, the same moment
                    trade_id = await master.open("XAUUSD", Side.BUY if n % 2 else Side.SELL, 0.1)
                    with trio.fail_after(10):
                        await complete[trade_id].wait()
                    written = master.intent_written_ns[trade_id]
                    if n >= args.warmup:
                        first[name].append((min(received[trade_id]) - written) / 1e6)
                        last[name].append((max(received[trade_id]) - written) / 1e6)
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
        "slaves_per_transport": args.slaves,
        "trades_per_transport": args.trades,
        "synchronous": args.synchronous,
        "transports": {
            name: {"first_slave_ms": _stats(first[name]), "fanout_complete_ms": _stats(last[name])}
            for name in legs
        },
        "copier_cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--slaves", type=int, default=5)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between trades")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        result = trio.run(bench, args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
