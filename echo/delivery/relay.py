"""The Agent's hop of a command, as a pure transition table (seed 000 section 6, "DeliveryManager").

Core hands the Agent a command for a slave account; the Agent owns getting that line *into the
terminal*: it keeps the command in its ack ledger until the terminal's ``pipe_delivery_ack`` says OK
(or FAILED), writes it again when the ack does not come within the ack timeout (same command_id: the
terminal answers a repeated one with its stored result), holds it while the terminal is offline and
writes it as soon as the terminal is back, and tells Core each stage with a ``CommandAck``:

- ``AGENT_BUFFERED / PENDING``: the terminal is not connected (or its connection broke); the command
  waits in the ledger.
- ``AGENT_BUFFERED / FAILED``: ``max_retries`` writes got no pipe ack; the Agent lets go and Core's own
  retry (its journal is the source of truth) decides what happens next.
- ``PIPE_DELIVERED / OK``: the terminal acknowledged the line.
- ``PIPE_DELIVERED / FAILED``: the terminal refused it (e.g. not ready); Core retries later.

Only writes to a connected terminal count as attempts: an offline terminal is waited for, not retried.
Core drops a command it has given up on (``DropCommand``), so the ledger never holds one longer than
Core's journal does. Same shape as ``machine``: state, input, time -> (state, effects).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeAlias

from echo.delivery.machine import Settings

# ------------------------------------------------------------------------------------------------- state


class RelayStatus(enum.Enum):
    BUFFERED = "BUFFERED"
    """Waiting for the terminal to be connected."""
    WRITTEN = "WRITTEN"
    """Written to the terminal's connection; waiting for its pipe_delivery_ack."""


@dataclass(frozen=True, slots=True)
class RelaySettings:
    timing: Settings
    """Ack timeout, backoff and max_retries: Core's delivery settings, as they are now."""
    hold_ms: int = 15 * 60_000
    """A command Core has not sent again for this long is not written any more (it is stale)."""


@dataclass(frozen=True, slots=True)
class Relay:
    affirmed_ms: int
    """When Core last sent the command."""
    status: RelayStatus = RelayStatus.BUFFERED
    attempts: int = 0
    """Writes to a connected terminal so far."""
    next_at_ms: int | None = None
    """When an unacknowledged write is written again."""


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Arrived:
    """Core sent the command (the first time, or again with the same command_id)."""

    connected: bool


@dataclass(frozen=True, slots=True)
class TerminalConnected:
    """The account's terminal completed a handshake."""


@dataclass(frozen=True, slots=True)
class WriteFailed:
    """The line could not be queued on the connection (it broke or the terminal is too slow)."""

    reason: str


@dataclass(frozen=True, slots=True)
class PipeAck:
    status: str
    """``OK``, ``RETRY`` or ``FAILED`` (the terminal's DeliveryStatus)."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ResultSeen:
    """The terminal's result for this command_id passed through: it certainly has the command."""


@dataclass(frozen=True, slots=True)
class Due:
    """The retry timer fired."""

    connected: bool


@dataclass(frozen=True, slots=True)
class Dropped:
    """Core gave up on the command."""


RelayInput: TypeAlias = Arrived | TerminalConnected | WriteFailed | PipeAck | ResultSeen | Due | Dropped

# --------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Write:
    attempt: int


@dataclass(frozen=True, slots=True)
class Store:
    """Record the entry in the ledger (new, or its attempt count changed)."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete the entry from the ledger: the Agent's part is over."""


@dataclass(frozen=True, slots=True)
class AckCore:
    stage: str
    """``AGENT_BUFFERED`` or ``PIPE_DELIVERED``."""
    result: str
    """``PENDING``, ``OK`` or ``FAILED``."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class WakeAt:
    at_ms: int


@dataclass(frozen=True, slots=True)
class Nothing:
    """A legitimate input with nothing to do (stale timer, duplicate ack); the reason is for debug logs."""

    reason: str


RelayEffect: TypeAlias = Write | Store | Forget | AckCore | WakeAt | Nothing
RelayResult: TypeAlias = tuple[Relay | None, list[RelayEffect]]
"""A ``None`` state means the entry is gone."""

# ----------------------------------------------------------------------------------------------- rules


def _write(s: Relay, now: int, cfg: RelaySettings) -> RelayResult:
    # Write (again), unless the writes are used up or Core stopped asking: then the Agent lets go and
    # Core (whose journal is the truth) decides.
    if now - s.affirmed_ms > cfg.hold_ms:
        return None, [
            Forget(),
            AckCore(
                "AGENT_BUFFERED", "FAILED", f"held {now - s.affirmed_ms} ms without Core sending it again"
            ),
        ]
    if s.attempts >= cfg.timing.max_retries:
        return None, [
            Forget(),
            AckCore("AGENT_BUFFERED", "FAILED", f"no pipe_delivery_ack after {s.attempts} writes"),
        ]
    attempt = s.attempts + 1
    at = now + cfg.timing.retry_delay_ms(attempt)
    return Relay(s.affirmed_ms, RelayStatus.WRITTEN, attempt, at), [Store(), Write(attempt), WakeAt(at)]


def _buffer(s: Relay, reason: str) -> RelayResult:
    return replace(s, status=RelayStatus.BUFFERED, next_at_ms=None), [
        Store(),
        AckCore("AGENT_BUFFERED", "PENDING", reason),
    ]


def _arrived(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # NEW or known --Arrived--> written at once when the terminal is connected, else buffered. A command
    # Core re-sends (its own timer fired) is written again: the terminal answers a repeat from its memory.
    assert isinstance(i, Arrived)
    state = Relay(now) if s is None else replace(s, affirmed_ms=now)
    if i.connected:
        return _write(state, now, cfg)
    if s is not None and s.status is RelayStatus.BUFFERED:
        return state, [Store(), AckCore("AGENT_BUFFERED", "PENDING", "account not connected")]
    return _buffer(state, "account not connected")


def _connected(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # The terminal is back: whatever it has not acknowledged goes out now (its old connection may have
    # taken the line down with it).
    assert s is not None
    return _write(s, now, cfg)


def _write_failed(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    assert s is not None and isinstance(i, WriteFailed)
    return _buffer(s, i.reason)


def _pipe_ack(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # OK: delivered, done. FAILED: the terminal will not take it; Core is told and retries on its own
    # schedule. RETRY: write again after the backoff.
    assert s is not None and isinstance(i, PipeAck)
    if i.status == "OK":
        return None, [Forget(), AckCore("PIPE_DELIVERED", "OK")]
    if i.status == "FAILED":
        return None, [Forget(), AckCore("PIPE_DELIVERED", "FAILED", i.reason)]
    if s.status is RelayStatus.BUFFERED:
        return s, [Nothing("RETRY ack for a buffered command")]
    at = now + cfg.timing.retry_delay_ms(s.attempts)
    return replace(s, next_at_ms=at), [WakeAt(at)]


def _result_seen(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # The result proves delivery even when the pipe ack was lost; Core gets the result itself.
    return None, [Forget()]


def _due(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    assert s is not None and isinstance(i, Due)
    if s.status is not RelayStatus.WRITTEN or s.next_at_ms is None or now < s.next_at_ms:
        return s, [Nothing("timer not due")]
    if not i.connected:
        return _buffer(s, "account not connected")
    return _write(s, now, cfg)


def _dropped(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    return None, [Forget()]


_Handler: TypeAlias = Callable[[Relay | None, RelayInput, int, RelaySettings], RelayResult]

RELAY_TABLE: dict[type, _Handler] = {
    Arrived: _arrived,
    TerminalConnected: _connected,
    WriteFailed: _write_failed,
    PipeAck: _pipe_ack,
    ResultSeen: _result_seen,
    Due: _due,
    Dropped: _dropped,
}
"""Every input on a ledger entry. Only ``Arrived`` creates one; every other input on a command the ledger
does not hold (already acknowledged, dropped, never seen) is stale and changes nothing."""


def relay_transition(
    state: Relay | None, event: RelayInput, now_ms: int, settings: RelaySettings
) -> RelayResult:
    if state is None and not isinstance(event, Arrived):
        return None, [Nothing(f"{type(event).__name__} for a command the ledger does not hold")]
    return RELAY_TABLE[type(event)](state, event, now_ms, settings)
