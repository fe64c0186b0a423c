"""A log file that rotates by size: what a long-running process with no terminal (the Windows service)
writes its structured log to, so the disk never fills. ``echo.log`` grows to ``max_bytes``, then becomes
``echo.log.1`` (the older ones shift to ``.2`` ... ``.backups``, the oldest dropped) and a new
``echo.log`` starts. A line is never split across two files."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


class RotatingLogFile:
    """A text stream (``write``/``flush``/``close``) for ``echo.app.logs.configure``."""

    def __init__(self, path: str | Path, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError("max_bytes must be 1 or more and backups 0 or more")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = self.path.open("ab")
        self._size = self._file.tell()

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._size += len(data)
        self._file.flush()  # a line reaches the disk as it is written: a crash loses nothing logged
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RotatingLogFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.backups - 1, 0, -1):
                older = self._backup(n)
                if older.exists():
                    os.replace(older, self._backup(n + 1))
            os.replace(self.path, self._backup(1))
        self._file = self.path.open("ab")
        self._size = 0

    def _backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")
