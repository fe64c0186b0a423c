"""Fault injection for the simulator: which faults a run has (``Faults``), how many struck (``FaultCounts``),
and the terminal connection that injects them (``FaultyStream``).

Faults (``--faults drop=0.05,dup=0.05,reorder=0.05,disconnect=0.01,crash=5``):

- ``drop``, ``dup``, ``reorder``: per line on every terminal connection, in both directions (a handshake is
  never touched): the line is lost, written twice, or held back and written after the next line;
- ``disconnect``: per line, the connection is closed instead (the terminal reconnects by itself);
- ``crash=K``: K crash-restarts at random times while the masters trade (carried out by the simulated world,
  ``echo.app.simulation.world``), each of the copier process, a slave terminal or a master terminal.
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio


class FaultSpecError(ValueError):
    """A ``--faults`` value is malformed; the message names the part."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What goes wrong: per-line probabilities on every terminal connection, and how many crash-restarts."""

    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    disconnect: float = 0.0
    crash: int = 0

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """``drop=0.05,dup=0.05,reorder=0.05,disconnect=0.01,crash=5`` (every key optional; "" is none)."""
        values: dict[str, float | int] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in ("drop", "dup", "reorder", "disconnect", "crash"):
                raise FaultSpecError(f"{part!r}: expected drop|dup|reorder|disconnect|crash=VALUE")
            if key in values:
                raise FaultSpecError(f"{key} given twice")
            try:
                if key == "crash":
                    values[key] = int(raw)
                    if values[key] < 0:
                        raise ValueError
                else:
                    p = float(raw)
                    if not (math.isfinite(p) and 0.0 <= p < 1.0):
                        raise ValueError
                    values[key] = p
            except ValueError:
                kind = "an integer >= 0" if key == "crash" else "a probability in [0, 1)"
                raise FaultSpecError(f"{key}={raw!r}: must be {kind}") from None
        return cls(**values)  # type: ignore[arg-type]

    @property
    def on_lines(self) -> bool:
        return any(p > 0 for p in (self.drop, self.dup, self.reorder, self.disconnect))

    def __str__(self) -> str:
        return (
            f"drop={self.drop:g},dup={self.dup:g},reorder={self.reorder:g},"
            f"disconnect={self.disconnect:g},crash={self.crash}"
        )


@dataclass
class FaultCounts:
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    disconnects: int = 0
    crashes: dict[str, int] = field(default_factory=lambda: {"copier": 0, "slave": 0, "master": 0})

    def as_dict(self) -> dict[str, Any]:
        return {
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "disconnects": self.disconnects,
            "crashes": dict(self.crashes),
        }


_log = structlog.get_logger("echo.simulate")
_ACCOUNT = re.compile(rb'"account_id":"([^"]*)"')
_TYPE = re.compile(rb'"type":"([a-z_]+)"')
_IDS = re.compile(rb'"(trade_id|command_id|event_id)":"([^"]*)"')


class _Direction:
    """One direction of a faulty connection: the unfinished tail of the input and a held-back line."""

    def __init__(self) -> None:
        self.tail = b""
        self.held: bytes | None = None


class FaultyStream(trio.abc.Stream):
    """A terminal's end of its connection, with line faults in both directions (see the module docstring).

    Decisions are per whole line; the handshake line is never dropped, duplicated, held or the cause of a
    disconnect (losing it is the same as losing the connection, which ``disconnect`` covers)."""

    def __init__(
        self, inner: trio.abc.Stream, rng: random.Random, faults: Faults, counts: FaultCounts
    ) -> None:
        self.inner, self.rng, self.faults, self.counts = inner, rng, faults, counts
        self._out = _Direction()
        self._in = _Direction()
        self._closed = False
        self._eof = False
        self.account: str | None = None
        """The account of the handshake that went through (for the trace)."""

    def _trace(self, fault: str, d: _Direction, raw: bytes) -> None:
        """One debug line per injected fault: which connection, which way, which line."""
        if _log.is_enabled_for(logging.DEBUG):
            found = _TYPE.search(raw[:40])
            _log.debug(
                "sim_fault",
                fault=fault,
                account=self.account,
                direction="to_agent" if d is self._out else "to_terminal",
                type=found.group(1).decode() if found else "?",
                **{k.decode(): v.decode() for k, v in _IDS.findall(raw)},
            )

    def _apply(self, lines: list[bytes], d: _Direction) -> tuple[bytes, bool]:
        """The bytes to pass on for these complete lines (without newlines), and whether to disconnect."""
        f, rng, c = self.faults, self.rng, self.counts
        out: list[bytes] = []
        for raw in lines:
            line = raw + b"\n"
            if b'"type":"handshake"' in raw[:40]:
                if self.account is None:
                    found = _ACCOUNT.search(raw)
                    self.account = found.group(1).decode() if found else "?"
                out.append(line)
                continue
            if f.disconnect and rng.random() < f.disconnect:
                c.disconnects += 1
                self._trace("disconnect", d, raw)
                d.held = None
                return b"".join(out), True
            if f.drop and rng.random() < f.drop:
                c.dropped += 1
                self._trace("drop", d, raw)
                continue
            if f.dup and rng.random() < f.dup:
                c.duplicated += 1
                self._trace("dup", d, raw)
                line += line
            if d.held is None and f.reorder and rng.random() < f.reorder:
                c.reordered += 1
                self._trace("hold", d, raw)
                d.held = line
                continue
            out.append(line)
            if d.held is not None:
                out.append(d.held)
                d.held = None
        return b"".join(out), False

    async def _disconnect(self) -> None:
        self._closed = True
        await trio.aclose_forcefully(self.inner)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed (fault)")
        lines = (self._out.tail + bytes(data)).split(b"\n")
        self._out.tail = lines[-1]
        out, disconnect = self._apply(lines[:-1], self._out)
        if out:
            await self.inner.send_all(out)
        if disconnect:
            await self._disconnect()
            raise trio.BrokenResourceError("the connection dropped (fault)")

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            if self._closed or self._eof:
                return b""
            data = await self.inner.receive_some()
            if not data:
                return b""
            lines = (self._in.tail + bytes(data)).split(b"\n")
            self._in.tail = lines[-1]
            out, disconnect = self._apply(lines[:-1], self._in)
            if disconnect:
                self._eof = True
                await self._disconnect()
                return out
            if out:
                return out

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._closed = True
        await self.inner.aclose()
