"""Where Echo keeps its files by default: ``var/`` under the working folder on POSIX (a checkout), and
``%PROGRAMDATA%\\Echo`` on Windows (where a service runs with no meaningful working folder)."""

from __future__ import annotations

import os
import sys


def default_data_folder() -> str:
    if sys.platform == "win32":
        return os.path.join(os.environ.get("PROGRAMDATA") or "C:\\ProgramData", "Echo")
    return "var"


DATA_FOLDER = default_data_folder()
"""The folder the default store, socket and ledger live in (created when missing)."""


def in_data_folder(name: str) -> str:
    """``name`` inside the default data folder (``var/echo.db``; ``C:\\ProgramData\\Echo\\echo.db``)."""
    return os.path.join(DATA_FOLDER, name) if sys.platform == "win32" else f"{DATA_FOLDER}/{name}"
