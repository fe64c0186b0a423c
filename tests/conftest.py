"""Shared test setup: structured logs go to a buffer (tests assert on them with capture_logs)."""

from __future__ import annotations

import io

from echo.app.logs import configure

configure("json", "debug", stream=io.StringIO())


def pytest_terminal_summary(terminalreporter: object) -> None:
    from tests.backends import SKIPPED

    for backend, why in sorted(SKIPPED.items()):
        terminalreporter.write_line(  # type: ignore[attr-defined]
            f"!!! {backend.upper()} TESTS SKIPPED: {why} (with CI=true they fail instead)",
            red=True,
            bold=True,
        )
