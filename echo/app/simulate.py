"""``echo.app.simulate``: the simulator's public names under the module path commands and tests import.

The simulator lives in the package ``echo.app.simulation`` (run, world, oracle) and its fault injection in
``echo.sim.faults``; this module only re-exports their public names."""

from echo.app.simulation import *  # noqa: F403 (the package's __all__, under this module's path)
