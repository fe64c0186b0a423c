"""Copy latency by the way terminals reach the Agent, side by side in one run.

- ``unix`` and ``tcp``: one all-in-one copier (``echo-copier run --role all``, its own process, SQLite
  journal) serving its Unix socket and ``agent.tcp_listen`` at once, and in this process one simulated
  master with ``--slaves`` simulated slaves per transport (``core.follow`` keeps each master's copies on its
  own transport). Trades alternate between the two, so both see the same copier in the same state.
- ``named_pipe``: then, the copier as on Windows (the Windows build of Python under Wine, prepared by
  ``tests/windows/prepare.py``) serving a named pipe, and a simulated master and its slaves in one
  process of that Python (this file with ``--pipe-client NAME``) on the pipe; the same trades, the same
  settings. Wine's cost is in these figures: they are not those of Windows. ``--no-pipe`` leaves it out.

Each sample is from the master writing its intent line to a slave reading the ``execute_order`` line
(``first`` slave, ``last``: the fan-out complete), as in ``bench_copy.py``.

Prints JSON: per transport, its floor (the fastest copy) and p50/p99/max/mean in milliseconds; and each
copier process's CPU seconds.
Usage: ``python bench/bench_transports.py [--trades 200] [--slaves 5] [--synchronous FULL|NORMAL]
[--pause 0.02] [--no-pipe]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # the Windows embeddable Python does not add it

from bench_copy import _stats, cpu_seconds, drain, open_copier, start_terminals, wait_ready

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
    cpu = 0.0
    try:
        await wait_ready(copier)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, copier)
            first, last = await measure(args, legs)
            cpu = cpu_seconds(copier.pid)
            nursery.cancel_scope.cancel()
    finally:
        copier.send_signal(signal.SIGTERM)
        await copier.wait()
    transports: dict[str, object] = {name: _leg(first[name], last[name]) for name in legs}
    cpus = {"unix+tcp": cpu}
    if args.pipe:
        transports["named_pipe"], cpus["named_pipe"] = await pipe_leg(args, workdir)
    return {
        "slaves_per_transport": args.slaves,
        "trades_per_transport": args.trades,
        "synchronous": args.synchronous,
        "transports": transports,
        "copier_cpu_s": cpus,
    }


async def measure(
    args: argparse.Namespace, legs: dict[str, tuple[str, list[str], Connect]]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """A simulated master and its slaves per leg, trading one trade at a time, alternating between the legs;
    per leg, the first-slave and fan-out-complete latencies in milliseconds (the warm-up left out)."""
    received: dict[str, list[int]] = defaultdict(list)
    complete: dict[str, trio.Event] = defaultdict(trio.Event)

    def on_execute(trade_id: str, _account: str, t_ns: int) -> None:
        received[trade_id].append(t_ns)
        if len(received[trade_id]) == args.slaves:
            complete[trade_id].set()

    rng = random.Random(1)
    market = SimMarket(random.Random(2))
    first: dict[str, list[float]] = {name: [] for name in legs}
    last: dict[str, list[float]] = {name: [] for name in legs}
    async with trio.open_nursery() as nursery:
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
        nursery.cancel_scope.cancel()
    return first, last


def _pipe_accounts(slaves: int) -> tuple[str, list[str]]:
    return "9003", [f"{51201 + i}" for i in range(slaves)]


async def pipe_leg(args: argparse.Namespace, workdir: Path) -> tuple[object, float]:
    """The named-pipe leg: the Windows copier under Wine serving a pipe, and this file under the same Wine
    Python as its terminals (``--pipe-client``); their latencies and the copier's CPU seconds."""
    from tests.windows import prepare

    home = prepare.prepare()
    python = str(home / "python" / "python.exe")
    env = prepare.wine_env(home / "prefix")
    name = f"echo-bench-{os.getpid()}"
    master, slaves = _pipe_accounts(args.slaves)
    config = workdir / "echo-windows.toml"
    config.write_text(
        f"[core]\nfollow = {{ {json.dumps(master)} = {json.dumps(slaves)} }}\n"
        f"[agent]\npipe_name = '{name}'\n"
        f"[store]\nurl = 'sqlite:///{prepare.wine_path(workdir / 'echo-windows.db')}'\n"
        f'synchronous = "{args.synchronous}"\n[log]\nlevel = "warning"\n'
    )
    copier = await trio.lowlevel.open_process(
        ["wine", python, "-m", "echo", "run", "--role", "all", "--config", prepare.wine_path(config)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # never a file: the Windows Python cannot write to one Wine redirects
        stderr=subprocess.PIPE,
    )
    try:
        await wait_ready(copier)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, copier)
            options = [f"--trades={args.trades}", f"--warmup={args.warmup}", f"--slaves={args.slaves}"]
            options += [f"--pause={args.pause}"]
            client = ["wine", python, prepare.wine_path(Path(__file__)), "--pipe-client", name, *options]
            done = await trio.run_process(
                client,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )  # stdout through a pipe: the Windows Python cannot write to a redirected file under Wine
            if done.returncode != 0:
                why = done.stderr.decode(errors="replace")[-3000:]
                raise SystemExit(f"the named-pipe client failed: {why}")
            cpu = cpu_seconds(copier.pid)
            nursery.cancel_scope.cancel()
    finally:
        copier.send_signal(signal.SIGINT)  # Wine turns it into a console Ctrl-C: the copier stops cleanly
        await copier.wait()
    return json.loads(done.stdout.decode().strip().splitlines()[-1]), cpu


async def pipe_client(args: argparse.Namespace) -> dict[str, object]:
    """``--pipe-client NAME`` (under the Windows Python): the named-pipe leg's terminals and samples."""
    from echo.adapters.pipe.winpipe import connect_pipe  # type: ignore[attr-defined,unused-ignore]

    async def over_pipe() -> trio.abc.Stream:
        stream: trio.abc.Stream = await connect_pipe(args.pipe_client)
        return stream

    master, slaves = _pipe_accounts(args.slaves)
    first, last = await measure(args, {"named_pipe": (master, slaves, over_pipe)})
    return _leg(first["named_pipe"], last["named_pipe"])


def _leg(first: list[float], last: list[float]) -> dict[str, object]:
    """A leg's figures; its floor is the fastest copy seen (the transport's cost with nothing queued)."""
    floor = round(min(first), 3)
    return {"floor_ms": floor, "first_slave_ms": _stats(first), "fanout_complete_ms": _stats(last)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--slaves", type=int, default=5)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between trades")
    parser.add_argument("--no-pipe", dest="pipe", action="store_false", help="leave out the named-pipe leg")
    parser.add_argument("--pipe-client", metavar="NAME", help=argparse.SUPPRESS)  # the pipe leg, under Wine
    args = parser.parse_args()
    if args.pipe_client:
        print(json.dumps(trio.run(pipe_client, args)))
        return
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        result = trio.run(bench, args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
