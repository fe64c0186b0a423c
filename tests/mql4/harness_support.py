"""Build MQL4 sources through the harness (translate to C++, compile with g++) for the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.backends import unavailable

ROOT = Path(__file__).resolve().parents[2]
MQL4 = ROOT / "mql4"
HARNESS = MQL4 / "harness"


def build(source: Path, out_dir: Path) -> Path:
    """Translate and compile ``source``; returns the executable. g++ missing: skipped (failed in CI)."""
    gxx = shutil.which("g++")
    if gxx is None:
        unavailable("g++", "no g++ on PATH (Debian: apt-get install g++)")
    cpp = out_dir / (source.stem + ".cpp")
    exe = out_dir / source.stem
    subprocess.run(
        [sys.executable, str(HARNESS / "translate.py"), str(source), "-o", str(cpp)], check=True, timeout=60
    )
    subprocess.run(
        [
            str(gxx),
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-unused-parameter",  # MQL4 event handlers keep parameters they may not use
            "-I",
            str(HARNESS / "shim"),
            "-o",
            str(exe),
            str(cpp),
        ],
        check=True,
        timeout=300,
        capture_output=True,
        text=True,
    )
    return exe


def ask(exe: Path, requests: list[str]) -> list[str]:
    """Send request lines to a self-test program; its answers, one per request."""
    done = subprocess.run(
        [str(exe)], input="".join(r + "\n" for r in requests), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[: len(requests)]
