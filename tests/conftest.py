"""Shared test setup: structured logs go to a buffer (tests assert on them with capture_logs)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from echo.app.logs import configure

configure("json", "debug", stream=io.StringIO())

_REPO_VAR = Path(__file__).resolve().parents[1] / "var"
"""The repository's data folder, which ``run`` uses by default: tests write to temporary folders only."""


def _files_in(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.is_dir() else {}


_VAR_BEFORE = _files_in(_REPO_VAR)
_VAR_WRITERS: dict[str, list[str]] = {}
"""File in the repository's ``var/`` -> the tests after which it had changed."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    before = _files_in(_REPO_VAR)
    result = yield
    for name, mtime in _files_in(_REPO_VAR).items():
        if before.get(name) != mtime:
            _VAR_WRITERS.setdefault(name, []).append(item.nodeid)
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    touched = sorted(n for n, t in _files_in(_REPO_VAR).items() if _VAR_BEFORE.get(n) != t)
    if touched:
        # a later `run` would open them as its own (an ack ledger of the default agent, say)
        by = "; ".join(f"{n} by {', '.join(_VAR_WRITERS.get(n, ['?']))}" for n in touched)
        print(f"\n!!! TESTS WROTE TO {_REPO_VAR}: {by} (tests use temporary folders only)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: object) -> None:
    from tests.backends import SKIPPED

    for backend, why in sorted(SKIPPED.items()):
        terminalreporter.write_line(  # type: ignore[attr-defined]
            f"!!! {backend.upper()} TESTS SKIPPED: {why} (with CI=true they fail instead)",
            red=True,
            bold=True,
        )
