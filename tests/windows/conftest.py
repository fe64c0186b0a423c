"""The EAs cross-compiled with MinGW for Windows, once per test session."""

from __future__ import annotations

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
