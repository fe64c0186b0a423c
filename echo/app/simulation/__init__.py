"""``echo-copier simulate``: the whole system in one trio process on a virtual clock, with faults.

The copier, simulated masters and slaves with their brokers, and a fault injector (``echo.sim.faults``),
all on trio's ``MockClock``. The masters trade their scripts at once; then the run waits (in virtual time,
up to a limit) until every master is flat and acknowledged and the last copier process holds no trade and
no command in flight, and the summary counts what the slaves really did.

- ``run``: the options, one seed on a deterministic trio, a store per seed, the seed loop (``main``);
- ``world``: the copier, the terminals and their brokers, the faulty connections and the crash-restarts;
- ``oracle``: the verdict (``summarize``, ``simulation_ok``, ``first_problem``).
"""

from echo.app.simulation.oracle import first_problem, simulation_ok, summarize, summary_line
from echo.app.simulation.run import (
    SimOptions,
    configure_logs,
    discard_store,
    main,
    parse_seeds,
    run_simulation,
    seed_store,
)
from echo.app.simulation.world import run_copier, still_clock_store
from echo.sim.faults import FaultCounts, Faults, FaultSpecError, FaultyStream

__all__ = [
    "FaultCounts",
    "FaultSpecError",
    "Faults",
    "FaultyStream",
    "SimOptions",
    "configure_logs",
    "discard_store",
    "first_problem",
    "main",
    "parse_seeds",
    "run_copier",
    "run_simulation",
    "seed_store",
    "simulation_ok",
    "still_clock_store",
    "summarize",
    "summary_line",
]
