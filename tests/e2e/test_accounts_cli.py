"""``echo-copier accounts``: after the demo's terminals have connected, each account is listed with its
role, Agent, last handshake time and the verdict it was sent; the store is only read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "echo"]


def test_accounts_lists_every_terminal_that_handshook_and_its_verdict(tmp_path: Path) -> None:
    demo = [*CLI, "demo", "--masters", "1", "--slaves", "2", "--trades", "2", "--pace", "0.01"]
    subprocess.run([*demo, "--workdir", str(tmp_path)], capture_output=True, timeout=120, check=True)
    store = f"sqlite:///{tmp_path / 'seed-7' / 'echo.db'}"
    done = subprocess.run(
        [*CLI, "accounts", "--store", store], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.strip() == f"store: {store}"
    lines = done.stdout.splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["51001", "slave", "agent", "agent-1"],
        ["51002", "slave", "agent", "agent-1"],
        ["9001", "master", "agent", "agent-1"],
    ]
    assert all(line.endswith("UTC  ACCEPTED") for line in lines), lines
    done = subprocess.run(
        [*CLI, "accounts", "--store", store, "--json"], capture_output=True, text=True, timeout=60, check=True
    )
    rows = json.loads(done.stdout)
    assert {r["account_id"]: r["verdict"] for r in rows} == {
        "51001": "ACCEPTED",
        "51002": "ACCEPTED",
        "9001": "ACCEPTED",
    }
    assert all(r["problems"] == [] and r["handshake_at_ms"] > 0 for r in rows)


def test_accounts_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    done = subprocess.run(
        [*CLI, "accounts", "--store", f"sqlite:///{missing}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and str(missing) in done.stderr
    assert not missing.exists()
