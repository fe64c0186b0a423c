"""The EAs cross-compiled with MinGW for Windows, once per test session; the shared Wine prefix's
wineserver kept up while the Windows tests run (they run one after another on one pytest-xdist worker, see
``tests/conftest.py``)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mql4.harness_support import MQL4, build_windows
from tests.windows.wine import wine_python


@dataclass(frozen=True)
class WindowsEAs:
    master: Path
    slave: Path


@pytest.fixture(scope="session", autouse=True)
def wineserver_kept_up() -> None:
    """The shared prefix's wineserver stays up between the Windows tests (and 20 s after the last one):
    each Wine process then starts in a fraction of a second instead of booting the prefix again (about a
    second each time). The service tests use prefixes of their own and are not affected."""
    quiet = subprocess.DEVNULL  # the server outlives the tests: it must hold none of their pipes open
    run = {"env": wine_python().env, "stdin": quiet, "stdout": quiet, "stderr": quiet, "timeout": 60}
    # a server already up (another run's Wine processes in this prefix) refuses: those tests then just start
    # slower
    subprocess.run(["wineserver", "-p20"], check=False, **run)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def windows_eas(tmp_path_factory: pytest.TempPathFactory) -> WindowsEAs:
    """EchoMaster.exe and EchoSlave.exe (built side by side). No Wine or MinGW: skipped (failed in CI)."""
    wine_python()  # nothing to run them with: skip before building
    out = tmp_path_factory.mktemp("windows-eas")
    with ThreadPoolExecutor(2) as pool:
        master, slave = pool.map(
            lambda name: build_windows(MQL4 / f"{name}.mq4", out), ["EchoMaster", "EchoSlave"]
        )
    return WindowsEAs(master, slave)
