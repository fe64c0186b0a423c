"""Shared test setup: structured logs go to a buffer (tests assert on them with capture_logs)."""

from __future__ import annotations

import io

from echo.app.logs import configure

configure("json", "debug", stream=io.StringIO())
