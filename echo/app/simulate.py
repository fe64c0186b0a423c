"""``echo.app.simulate``: the simulator's public names under the module path commands and tests import.

The simulator lives in the package ``echo.app.simulation`` (run, world, oracle) and its fault injection in
``echo.sim.faults``; this module only re-exports their public names."""

from echo.app.simulation import (
    FaultCounts,
    Faults,
    FaultSpecError,
    FaultyStream,
    SimOptions,
    configure_logs,
    discard_store,
    first_problem,
    main,
    parse_seeds,
    run_copier,
    run_simulation,
    seed_store,
    simulation_ok,
    still_clock_store,
    summarize,
    summary_line,
)

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
