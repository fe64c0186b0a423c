"""The small JSON-lines files a simulated terminal keeps across restarts (as the MQL4 EAs keep theirs in
``CommonFiles``): one JSON object per line, appended as things happen, rewritten atomically (a temporary
file, then ``os.replace``) to drop what is no longer needed. A torn or unreadable line (a crash mid-write)
is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from echo.pipe.codec import Decoded, decode_line, encode

log = logging.getLogger(__name__)


def read(path: Path) -> list[dict[str, Any]]:
    """The file's records in order; none when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            log.warning("%s:%d: skipping unreadable line: %s", path, n, exc)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            log.warning("%s:%d: skipping a line that is not an object", path, n)
    return records


def append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")


def rewrite(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace the file's content with ``records`` in one atomic step."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def line_of(payload: object, timestamp_ms: int) -> str:
    """A protocol line (without its newline) as text, for a record."""
    return encode(payload, timestamp_ms).decode("utf-8").rstrip("\n")


def payload_of(line: object, accept: frozenset[str]) -> Any | None:
    """The payload of a stored protocol line, or None (with a warning) when it does not decode."""
    if not isinstance(line, str):
        log.warning("stored line is not text: %r", line)
        return None
    event = decode_line(line.encode("utf-8"), accept)
    if not isinstance(event, Decoded):
        log.warning("stored line does not decode: %s", event.message)
        return None
    return event.payload
