"""`echo-copier config` as a user runs it, against a TOML file and a real etcd: import, get, set (a bad
value refused with the key and the range), validate, export; the file keeps its comments."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import etcd_server

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "echo", "config"]
EXAMPLE = Path(__file__).resolve().parents[2] / "echo.example.toml"


@pytest.fixture(params=["file", pytest.param("etcd", marks=pytest.mark.etcd)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "file":
        path = tmp_path / "echo.toml"
        path.write_text("# my settings\n", encoding="utf-8")
        yield str(path)
        return
    with etcd_server() as url:
        yield url


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_config_commands(spec: str, tmp_path: Path) -> None:
    assert run("--config", spec, "import", str(EXAMPLE)).returncode == 0
    assert run("--config", spec, "get", "policy.51001.risk_fixed").stdout.strip() == "100.0"
    assert run("--config", spec, "set", "delivery.ack_timeout_ms", "700").returncode == 0
    assert run("--config", spec, "get", "delivery.ack_timeout_ms").stdout.strip() == "700"
    refused = run("--config", spec, "set", "policy.51001.max_spread", "-3")
    assert refused.returncode == 2 and "policy.51001: max_spread must be 0..1e+06, got -3" in refused.stderr
    assert run("--config", spec, "get", "policy.51001.max_spread").stdout.strip() == "40"
    missing = run("--config", spec, "get", "policy.51002.max_spread")
    assert missing.returncode == 1 and "not set" in missing.stderr
    assert "valid" in run("--config", spec, "validate").stdout
    out = tmp_path / "exported.toml"
    assert run("--config", spec, "export", "--to", str(out)).returncode == 0
    exported = tomllib.loads(out.read_text(encoding="utf-8"))
    assert exported["delivery"]["ack_timeout_ms"] == 700
    assert len(exported["policy"]["51001"]["windows"]) == 2


def test_set_keeps_a_files_comments(tmp_path: Path) -> None:
    path = tmp_path / "echo.toml"
    path.write_text("# my settings\n[core]\nfixed_lot = 0.2  # lots per slave\n", encoding="utf-8")
    assert run("--config", str(path), "set", "policy.51001.max_spread", "30").returncode == 0
    text = path.read_text(encoding="utf-8")
    assert "# my settings" in text and "# lots per slave" in text
    assert tomllib.loads(text)["policy"]["51001"]["max_spread"] == 30
