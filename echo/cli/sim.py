"""The commands that simulate: ``sim-ea`` (a simulated terminal against a running Agent), ``demo`` (the
copier and simulated terminals on real sockets) and ``simulate`` (the whole system on a virtual clock with
injected faults)."""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from pathlib import Path
from typing import Any

import trio

from echo.cli.common import LOG_LEVEL_HELP, count, load_config, positive, seconds
from echo.domain.config import parse_host_port
from echo.domain.paths import in_data_folder


def cmd_sim_ea(args: argparse.Namespace) -> int:
    from echo.adapters.locks import StartError
    from echo.adapters.pipe.tcp import connect_tcp
    from echo.adapters.pipe.unix import connect_unix
    from echo.app.logs import configure
    from echo.sim.market import SimMarket
    from echo.sim.master import SimMasterEA
    from echo.sim.profiles import master_broker, slave_broker
    from echo.sim.slave import SimSlaveEA

    configure(args.log_format or "console", "info")
    rng = random.Random(args.seed)
    market = SimMarket(random.Random(rng.random()))

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    if args.tcp:
        parse_host_port(args.tcp, "--tcp")  # a ConfigError naming the flag, before anything starts
    if args.tcp:
        where = f"TCP {args.tcp}"
    elif args.pipe:
        where = f"the named pipe {args.pipe}"
    else:
        where = f"the socket {args.socket}"

    async def connect() -> trio.abc.Stream:
        if args.tcp:
            return await connect_tcp(args.tcp)
        if args.pipe:
            if sys.platform == "win32":
                from echo.adapters.pipe.winpipe import connect_pipe

                return await connect_pipe(args.pipe)
            raise StartError("--pipe: named pipes are served on Windows only")
        return await connect_unix(args.socket)

    async def main() -> None:
        try:
            await (await connect()).aclose()  # an Agent answers there, or one line says it does not
        except OSError as exc:
            raise StartError(f"no agent answers at {where}: {exc.strerror or exc}") from exc
        async with trio.open_nursery() as nursery:
            nursery.start_soon(market.run)
            if args.role == "slave":
                slave = SimSlaveEA(
                    args.account,
                    slave_broker(args.profile, market, rng),
                    connect,
                    now_ms,
                    state_path=args.state,
                    token=args.token,
                )
                await nursery.start(slave.run)
                print(f"sim slave {args.account} connected to {where}", file=sys.stderr)
            else:
                master = SimMasterEA(
                    args.account,
                    master_broker(market, rng),
                    connect,
                    now_ms,
                    rng,
                    queue_path=args.state,
                    token=args.token,
                )
                await nursery.start(master.run)
                print(f"sim master {args.account} connected to {where}", file=sys.stderr)
                if args.burst:
                    await master.burst(args.burst)
                    await master.wait_all_acked()
                    print(f"sim master {args.account}: {args.burst} trades done", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                elif args.trades:
                    await master.run_script(args.trades, pace=args.pace)
                    await master.wait_all_acked()  # every event is safe with Core before the terminal quits
                    print(f"sim master {args.account}: {args.trades} trades done", file=sys.stderr)
                    nursery.cancel_scope.cancel()

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from echo.adapters.locks import parent_folder
    from echo.app import demo
    from echo.app.logs import configure

    workdir = Path(args.workdir)
    parent_folder(workdir, "--workdir")
    workdir.mkdir(exist_ok=True)
    log_path = workdir / f"echo-seed-{args.seed}.log"
    log_file = log_path.open("w", encoding="utf-8")
    configure("json", args.log_level, stream=log_file)
    opts = demo.DemoOptions(
        masters=args.masters,
        slaves=args.slaves,
        trades=args.trades,
        seed=args.seed,
        json=args.json,
        workdir=workdir,
        store_url=args.store,
        synchronous=args.synchronous,
        pace=args.pace,
        config_spec=args.config,
        split=args.split,
    )
    try:
        code = demo.main(opts)
    finally:
        log_file.close()
    print(f"logs: {log_path}", file=sys.stderr)
    return code


def cmd_simulate(args: argparse.Namespace) -> int:
    from echo.adapters.locks import parent_folder
    from echo.app import simulate

    try:
        seeds = simulate.parse_seeds(args.seeds) if args.seeds else None
        opts = simulate.SimOptions(
            seed=args.seed,
            masters=args.masters,
            slaves=args.slaves,
            trades=args.trades,
            faults=simulate.Faults.parse(args.faults),
            pace=args.pace,
            max_virtual_seconds=args.max_virtual_seconds,
            store_url=args.store or "memory://",
            config=load_config(args.config) if args.config else None,
            transport=args.transport,
        )
    except ValueError as exc:
        print(f"echo-copier simulate: {exc}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        log_file = None
        if args.log_file:
            parent_folder(args.log_file, "--log-file")
            log_file = stack.enter_context(open(args.log_file, "w", encoding="utf-8"))
        simulate.configure_logs(log_file, args.log_level)
        return simulate.main(opts, seeds=seeds, json_out=args.json)


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("sim-ea", help="a simulated terminal against a running agent")
    s.add_argument("--role", choices=["master", "slave"], required=True, help="the terminal's role")
    s.add_argument("--account", required=True, help="the account id the terminal presents")
    s.add_argument(
        "--socket", default=in_data_folder("echo.sock"), help="the Agent's socket (default: %(default)s)"
    )
    s.add_argument(
        "--pipe", help="Windows: the Agent's named pipe NAME (\\\\.\\pipe\\NAME) instead of --socket"
    )
    s.add_argument(
        "--tcp", metavar="HOST:PORT", help="connect over TCP instead, to the Agent's agent.tcp_listen"
    )
    s.add_argument("--profile", type=count, default=0, help="slave broker profile index")
    s.add_argument("--seed", type=int, default=1, help="seed of the simulated market and broker")
    s.add_argument(
        "--trades", type=count, default=0, help="master: run a random script of N trades, then exit"
    )
    s.add_argument("--pace", type=seconds, default=0.2, help="master: mean seconds between actions")
    s.add_argument(
        "--burst",
        type=count,
        default=0,
        help="master: open N trades back to back, then close them all; exit",
    )
    s.add_argument(
        "--state",
        help="a JSON-lines file that survives restarts: the slave's results, or the master's unacked queue",
    )
    s.add_argument("--log-format", choices=["console", "json"], help="console (default) or json")
    s.add_argument("--token", default="", help="the agent's agent.token, presented in the handshake")
    s.set_defaults(func=cmd_sim_ea)

    d = sub.add_parser("demo", help="copier + simulated terminals on real sockets, with a summary")
    d.add_argument("--masters", type=positive, default=1, help="master terminals (1 or more)")
    d.add_argument("--slaves", type=positive, default=2, help="slave terminals (1 or more)")
    d.add_argument("--trades", type=positive, default=50, help="master trades in all (1 or more)")
    d.add_argument("--seed", type=int, default=7, help="seed of the trade scripts, market and brokers")
    d.add_argument("--json", action="store_true", help="last stdout line is the summary as JSON")
    d.add_argument(
        "--workdir",
        default="var/demo",
        help="folder for the demo's store, sockets and log (its parent must exist)",
    )
    d.add_argument("--store", help="store url (default: a fresh SQLite file in the workdir)")
    d.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="SQLite durability (store.synchronous)",
    )
    d.add_argument("--pace", type=seconds, default=0.04, help="mean seconds between a master's actions")
    d.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help=LOG_LEVEL_HELP
    )
    d.add_argument(
        "--config",
        help="a TOML file or etcd://HOST:PORT (policies, follow, delivery...; changes apply to the next "
        "trade); the demo still picks its own socket and store",
    )
    d.add_argument(
        "--split",
        action="store_true",
        help="split mode: Core in this process serving gRPC, two Agents as child processes",
    )
    d.set_defaults(func=cmd_demo)

    sim = sub.add_parser(
        "simulate", help="the whole system on a virtual clock with injected faults; deterministic per seed"
    )
    sim.add_argument("--seed", type=int, default=1, help="the run's seed (the same seed, the same run)")
    sim.add_argument("--seeds", help="a sweep, A..B: one line per seed and a final JSON with the counts")
    sim.add_argument("--masters", type=positive, default=1, help="master terminals (1 or more)")
    sim.add_argument("--slaves", type=positive, default=3, help="slave terminals (1 or more)")
    sim.add_argument("--trades", type=positive, default=15, help="master trades in all (1 or more)")
    sim.add_argument(
        "--faults",
        default="",
        help="e.g. drop=0.05,dup=0.05,reorder=0.05,disconnect=0.01,crash=5 (per-line probabilities; "
        "crash = number of crash-restarts)",
    )
    sim.add_argument(
        "--pace", type=seconds, default=0.1, help="mean virtual seconds between a master's actions"
    )
    sim.add_argument(
        "--max-virtual-seconds", type=seconds, default=3600.0, help="fail if not settled by then"
    )
    sim.add_argument("--json", action="store_true", help="the summary as one JSON line")
    sim.add_argument(
        "--store", help="store url (default memory://; a fresh sqlite:/// or postgresql:// works)"
    )
    sim.add_argument("--config", help="a TOML file or etcd://HOST:PORT whose policies the run copies under")
    sim.add_argument(
        "--transport",
        choices=["inproc", "grpc"],
        default="inproc",
        help="join Core and the Agent in-process (deterministic) or over gRPC on localhost TCP",
    )
    sim.add_argument("--log-file", help="structured log (virtual timestamps); default: no log")
    sim.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help=LOG_LEVEL_HELP
    )
    sim.set_defaults(func=cmd_simulate)
