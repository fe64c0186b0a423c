"""The EAs are translated and compiled once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mql4.harness_support import MQL4, build


@pytest.fixture(scope="session")
def slave_exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build(MQL4 / "EchoSlave.mq4", tmp_path_factory.mktemp("slave"))


@pytest.fixture(scope="session")
def master_exe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield build(MQL4 / "EchoMaster.mq4", tmp_path_factory.mktemp("master"))
