"""The MQL5 slave is translated and compiled once per test run, as the MQL4 EAs are; the MT4 EAs'
fixtures (``slave_exe``, ``master_exe``) are shared from ``tests/mql4/conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import once_per_run
from tests.mql4.conftest import master_exe, slave_exe
from tests.mql4.harness_support import ROOT, build

MQL5 = ROOT / "mql5"

__all__ = ["master_exe", "slave5_exe", "slave_exe"]


@pytest.fixture(scope="session")
def slave5_exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield once_per_run(tmp_path_factory, "slave5", lambda d: build(MQL5 / "EchoSlave.mq5", d))


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MT5 terminals of these tests list 127.0.0.1 among their allowed hosts (as the install guide
    says to)."""
    monkeypatch.setenv("ECHO_ALLOWED_HOSTS", "127.0.0.1")
