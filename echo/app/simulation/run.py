"""Running the simulator: the options, one seed in its own ``trio.run`` on a ``MockClock``, and the seed loop.

Each seed runs on trio's ``MockClock`` with ``autojump_threshold=0``: whenever every task is blocked,
virtual time jumps to the next deadline, so hours of retries and backoffs take seconds. Nothing reads the
wall clock (``TrioClock``; the terminals get its ``now_ms``) and every random choice comes from one
``random.Random(seed)``, so a seed is a reproducible scenario: the same seed prints the same summary. In a
run of several seeds each seed keeps its store of its own (``seed_store``).

**Determinism and trio.** trio's scheduler randomises the order of each batch of runnable tasks with a
module-level ``random.Random`` (``trio._core._run._r``) and breaks deadline ties by ``id()``. For the
duration of a simulation this module seeds ``_r`` from the simulation seed and turns on the deterministic
batch order trio uses under Hypothesis (``_ALLOW_DETERMINISTIC_SCHEDULING``: each batch sorted by task
creation order, then shuffled with ``_r``). Both are trio internals, touched only here, only for the
simulator, and restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import trio
import trio.testing

from echo.adapters.store.postgres import drop_schema, split_url
from echo.app import logs
from echo.app.simulation.oracle import first_problem, simulation_ok, summary_line
from echo.app.simulation.world import World
from echo.domain.config import Config
from echo.sim.faults import Faults


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What one run simulates: how many terminals and trades, which faults, and the limits it runs under."""

    seed: int = 1
    masters: int = 1
    slaves: int = 3
    trades: int = 15
    faults: Faults = field(default_factory=Faults)
    pace: float = 0.1
    """Mean virtual seconds between a master's actions."""
    max_open: int = 3
    crash_pause: tuple[float, float] = (0.1, 3.0)
    """Virtual seconds a crashed component stays down (uniform)."""
    max_virtual_seconds: float = 3600.0
    """The whole run must settle within this much virtual time."""
    store_url: str = "memory://"
    """Where the copier keeps its state. memory:// and sqlite:/// keep a seed's run identical every time;
    postgresql:// settles alike (virtual time stands still while a store call runs in its thread), but the
    moment a call returns is real, so a seed's run may differ from one time to the next."""
    config: Config | None = None
    """Policies, catalog, protocol and delivery settings to run under (agent and store stay the run's)."""
    transport: Literal["inproc", "grpc"] = "inproc"
    """How Core and the Agent are joined: in-process channels, or gRPC over localhost TCP (split mode's
    transport). gRPC does real network I/O, which the virtual clock cannot wait for: virtual time jumps
    only after 50 ms of real idleness, and a seed's run is no longer identical every time."""

    def __post_init__(self) -> None:
        if self.masters < 1 or self.slaves < 1 or self.trades < 0:
            raise ValueError("need at least one master and one slave, and trades >= 0")
        if not (
            self.pace > 0 and self.max_virtual_seconds > 0 and 0 <= self.crash_pause[0] <= self.crash_pause[1]
        ):
            raise ValueError("pace, max_virtual_seconds and the crash pause must be positive")
        if self.transport not in ("inproc", "grpc"):
            raise ValueError(f"transport must be inproc or grpc, got {self.transport!r}")


@contextlib.contextmanager
def _deterministic_trio(seed: int) -> Iterator[None]:
    """Seed trio's scheduler and make its batch order depend on that seed only (see the module docstring).
    Reaches into ``trio._core._run``: for the simulator only; restored on exit."""
    run_mod: Any = trio._core._run
    saved_state = run_mod._r.getstate()
    saved_flag = run_mod._ALLOW_DETERMINISTIC_SCHEDULING
    run_mod._r.seed(seed)
    run_mod._ALLOW_DETERMINISTIC_SCHEDULING = True
    try:
        yield
    finally:
        run_mod._r.setstate(saved_state)
        run_mod._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag


def seed_store(url: str, seed: int) -> str:
    """The store one seed of a multi-seed run uses: a schema (PostgreSQL) or file (SQLite) of its own beside
    the given one, so that no seed meets another's trades."""
    if url.startswith(("postgresql://", "postgres://")):
        conninfo, schema = split_url(url)
        return f"{conninfo}{'&' if '?' in conninfo else '?'}schema={schema}_s{seed}"
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        return f"sqlite:///{path.removesuffix('.db')}-s{seed}.db"
    return url


def discard_store(url: str) -> None:
    """Remove a seed's own store (``seed_store``): before the seed runs, and after it if it passed."""
    if url.startswith(("postgresql://", "postgres://")):
        drop_schema(url)
    elif url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)


def run_simulation(opts: SimOptions) -> dict[str, Any]:
    """Run one seed to the end (in its own ``trio.run`` on a ``MockClock``) and return the summary."""
    with tempfile.TemporaryDirectory(prefix="echo-sim-") as tmp, _deterministic_trio(opts.seed):
        world = World(opts, Path(tmp))
        if opts.transport == "grpc":
            clock = trio.testing.MockClock(autojump_threshold=0.05)
            summary: dict[str, Any] = trio.run(world.run_with_asyncio, clock=clock)
        else:
            summary = trio.run(world.run, clock=trio.testing.MockClock(autojump_threshold=0))
    return summary


def configure_logs(stream: TextIO | None, level: str = "info") -> None:
    """The simulator's logs: JSON lines stamped with virtual seconds (``t``), never wall time, the simulated
    terminals' lines among them, or nothing at all without a stream (logging costs more than the simulated
    work)."""
    logs.configure(
        "json", level if stream is not None else "off", stream, clock="virtual", stdlib=("echo.sim",)
    )


def parse_seeds(text: str) -> list[int]:
    """``7`` or ``1..200`` (inclusive)."""
    lo, sep, hi = text.partition("..")
    try:
        first = int(lo)
        last = int(hi) if sep else first
    except ValueError:
        raise ValueError(f"seeds must be N or A..B, got {text!r}") from None
    if last < first:
        raise ValueError(f"empty seed range {text!r}")
    return list(range(first, last + 1))


def main(opts: SimOptions, *, seeds: list[int] | None = None, json_out: bool = False) -> int:
    """One seed: a summary (JSON with ``json_out``), exit status 1 on any copy error. Several seeds: one line
    each and a final JSON object with the counts."""
    if seeds is None:
        summary = run_simulation(opts)
        if json_out:
            sys.stdout.write(json.dumps(summary) + "\n")
        else:
            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        sys.stdout.flush()
        if simulation_ok(summary):
            return 0
        print(f"simulate: seed {opts.seed} FAILED: {first_problem(summary)}", file=sys.stderr)
        return 1
    failed: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    started = time.perf_counter()  # reporting only: the simulations themselves never read the wall clock
    for seed in seeds:
        t = time.perf_counter()
        store_url = seed_store(opts.store_url, seed)
        discard_store(store_url)
        summary = run_simulation(dataclasses.replace(opts, seed=seed, store_url=store_url))
        if simulation_ok(summary):
            discard_store(store_url)
        print(f"{summary_line(summary)} wall={time.perf_counter() - t:.2f}s", flush=True)
        for key in (
            "master_trades",
            "expected_copies",
            "copied",
            "omitted",
            "lost",
            "duplicates",
            "open_after",
        ):
            totals[key] += summary[key]
        f = summary["faults"]
        for key in ("dropped", "duplicated", "reordered", "disconnects"):
            totals[key] += f[key]
        for key, n in f["crashes"].items():
            totals[f"crash_{key}"] += n
        if not simulation_ok(summary):
            failed.append({"seed": seed, "first_problem": first_problem(summary)})
            kept = f" (its store is kept: {store_url})" if store_url != "memory://" else ""
            print(
                f"simulate: seed {seed} FAILED: {first_problem(summary)}{kept}", file=sys.stderr, flush=True
            )
    result = {
        "seeds": len(seeds),
        "ok": len(seeds) - len(failed),
        "failed": failed,
        "totals": dict(totals),
        "faults_spec": str(opts.faults),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result), flush=True)
    return 0 if not failed else 1
