"""The Agent's hop of a command, as a pure transition table (seed 000 section 6, "DeliveryManager").

Core hands the Agent a command for a slave account; the Agent owns getting that line *into the
terminal*, and is the only one that writes it there: it keeps the command in its ack ledger until the
terminal's ``pipe_delivery_ack`` says OK (or FAILED), writes it again when the ack does not come within
the ack timeout (plus backoff), or ``retry_backoff_ms`` after a ``RETRY`` ack (same command_id: the
terminal answers a repeated one with its stored result), holds it while the terminal is offline and
writes it as soon as the terminal is back, and tells Core each stage with a ``CommandAck``:

- ``AGENT_BUFFERED / PENDING``: the terminal is not connected (or its connection broke); the command
  waits in the ledger.
- ``AGENT_BUFFERED / FAILED``: ``max_retries`` writes got no pipe ack; the Agent lets go and Core's own
  retry (its journal is the source of truth) decides what happens next.
- ``PIPE_DELIVERED / OK``: the terminal acknowledged the line.
- ``PIPE_DELIVERED / FAILED``: the terminal refused it (e.g. not ready); Core retries later.

**One writer, rising attempts.** Every write carries an ``attempt`` above every earlier write of the
command and never below the attempt of Core's latest send. Core sending a command again is a request,
not a write: while the Agent waits for the pipe ack of its own write (``WRITTEN``), or wrote the command
less than ``ack_timeout_ms`` ago, the request only renews the hold, so the terminal never gets the same
command twice within moments. Once the Agent's part is over (``IDLE``: acknowledged, refused, or its
writes used up) the command leaves the ledger but its numbers stay in memory until Core is done with it
(the result passes, Core drops it, or Core has not asked for ``hold_ms``): a later send from Core (a lost
result, a reconnect) is written once more, numbered past the last write.

**Counted from when it left.** A write is queued on the terminal's connection; the wait for its pipe ack
counts from when the line actually left that outbox (``Written``), and a line still queued is not written
again. A terminal whose outbox is full (it reads, slowly) is not cut off: the command is held (``Busy``,
BUFFERED, Core told so) and written when there is room.

Only writes to a connected terminal count towards ``max_retries``: an offline terminal is waited for,
not retried. Core drops a command it has given up on (``DropCommand``), so the ledger never holds one
longer than Core's journal does. Same shape as ``machine``: state, input, time -> (state, effects).
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
    IDLE = "IDLE"
    """The Agent's part is over until Core sends the command again (acknowledged, refused, or written
    ``max_retries`` times): out of the ledger, kept in memory to number the next write."""


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
    attempt: int = 0
    """The attempt of the last write to the terminal (0: never written)."""
    next_at_ms: int | None = None
    """WRITTEN: when an unacknowledged write is written again. IDLE: when the entry is forgotten."""
    writes: int = 0
    """Writes to a connected terminal since Core last asked after an IDLE (counted against max_retries)."""
    written_at_ms: int | None = None
    """When the last write was queued, then when it actually left for the terminal (``Written``)."""
    queued: bool = False
    """The last write is still in the connection's outbox: not re-written while it waits there."""
    floor: int = 1
    """The attempt of Core's latest send: no write is numbered below it."""


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Arrived:
    """Core sent the command (the first time, or again with the same command_id and ``attempt``)."""

    connected: bool
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class TerminalConnected:
    """The account's terminal completed a handshake."""


@dataclass(frozen=True, slots=True)
class WriteFailed:
    """The line could not be queued on the connection (it broke or the terminal is too slow)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Busy:
    """The terminal's outbox has no room (it is still reading earlier lines): the command is held and
    written when there is room (``TerminalConnected`` again), and the write does not count."""


@dataclass(frozen=True, slots=True)
class Written:
    """The line actually left for the terminal (its outbox reached the connection): the wait for its
    pipe ack counts from here, not from when it was queued."""


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


RelayInput: TypeAlias = (
    Arrived | TerminalConnected | WriteFailed | Busy | Written | PipeAck | ResultSeen | Due | Dropped
)

# --------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Write:
    attempt: int
    """The attempt number the line carries."""


@dataclass(frozen=True, slots=True)
class Store:
    """Record the entry in the ledger (new, or its attempt changed)."""


@dataclass(frozen=True, slots=True)
class Release:
    """Delete the entry from the ledger (nothing left to write) but keep it in memory (IDLE)."""


@dataclass(frozen=True, slots=True)
class Forget:
    """Delete the entry from the ledger and from memory: the Agent's part is over."""


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


RelayEffect: TypeAlias = Write | Store | Release | Forget | AckCore | WakeAt | Nothing
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
    if s.writes >= cfg.timing.max_retries:
        return _idle(s, cfg), [
            Release(),
            AckCore("AGENT_BUFFERED", "FAILED", f"no pipe_delivery_ack after {s.writes} writes"),
            *_expiry(s, cfg),
        ]
    attempt = max(s.attempt + 1, s.floor)
    writes = s.writes + 1
    at = now + cfg.timing.retry_delay_ms(writes)
    # Built whole rather than by ``replace`` (a write and its ack are on every copy's path: a third of
    # the cost). ``_written`` and ``_idle`` likewise.
    new = Relay(
        affirmed_ms=s.affirmed_ms,
        status=RelayStatus.WRITTEN,
        attempt=attempt,
        next_at_ms=at,
        writes=writes,
        written_at_ms=now,
        queued=True,
        floor=s.floor,
    )
    return new, [Store(), Write(attempt), WakeAt(at)]


def _idle(s: Relay, cfg: RelaySettings) -> Relay:
    return Relay(
        affirmed_ms=s.affirmed_ms,
        status=RelayStatus.IDLE,
        attempt=s.attempt,
        next_at_ms=s.affirmed_ms + cfg.hold_ms,
        writes=s.writes,
        written_at_ms=s.written_at_ms,
        queued=s.queued,
        floor=s.floor,
    )


def _expiry(s: Relay, cfg: RelaySettings) -> list[RelayEffect]:
    return [WakeAt(s.affirmed_ms + cfg.hold_ms)]


def _buffer(s: Relay, reason: str) -> RelayResult:
    return replace(s, status=RelayStatus.BUFFERED, next_at_ms=None, queued=False), [
        Store(),
        AckCore("AGENT_BUFFERED", "PENDING", reason),
    ]


def _arrived(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # NEW --Arrived--> written at once when the terminal is connected, else buffered. Core sending a known
    # command again renews the hold and raises the floor of the attempt; it is written only when the Agent
    # is not already waiting on a write of its own (one writer: no second copy within moments).
    assert isinstance(i, Arrived)
    if s is None:
        state = Relay(now, floor=i.attempt)
        return _write(state, now, cfg) if i.connected else _buffer(state, "account not connected")
    state = Relay(
        affirmed_ms=now,
        status=s.status,
        attempt=s.attempt,
        next_at_ms=s.next_at_ms,
        writes=s.writes,
        written_at_ms=s.written_at_ms,
        queued=s.queued,
        floor=max(s.floor, i.attempt),
    )
    if not i.connected:
        if s.status is RelayStatus.BUFFERED:
            return state, [Store(), AckCore("AGENT_BUFFERED", "PENDING", "account not connected")]
        return _buffer(
            replace(state, writes=0) if s.status is RelayStatus.IDLE else state, "account not connected"
        )
    if s.status is RelayStatus.BUFFERED:
        return _write(state, now, cfg)
    if s.status is RelayStatus.WRITTEN:
        return state, [Store(), Nothing("written, waiting for its pipe ack: the Agent writes it again")]
    # IDLE: Core asks again (no result came, or the terminal reconnected): a new round of writes, unless the
    # last write is too recent for its answer to have come.
    if s.written_at_ms is not None and now - s.written_at_ms < cfg.timing.ack_timeout_ms:
        state = replace(state, next_at_ms=now + cfg.hold_ms)
        return state, [Nothing(f"written {now - s.written_at_ms} ms ago"), WakeAt(now + cfg.hold_ms)]
    return _write(replace(state, writes=0), now, cfg)


def _connected(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # The terminal is back: whatever it has not acknowledged goes out now (its old connection may have
    # taken the line down with it). An IDLE command is Core's to send again.
    assert s is not None
    if s.status is RelayStatus.IDLE:
        return s, [Nothing("the Agent's part is over until Core sends it again")]
    return _write(s, now, cfg)


def _write_failed(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    assert s is not None and isinstance(i, WriteFailed)
    if s.status is RelayStatus.IDLE:
        return s, [Nothing("write failure after the Agent's part was over")]
    return _buffer(s, i.reason)


def _busy(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # The write just made found no room: held (BUFFERED) until the terminal has read enough, and that write
    # does not count against max_retries. Core hears it is buffered, so it does not send it again soon.
    assert s is not None
    if s.status is RelayStatus.IDLE:
        return s, [Nothing("no room after the Agent's part was over")]
    return _buffer(replace(s, writes=max(s.writes - 1, 0)), "terminal busy: held until it reads")


def _written(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # The line left for the terminal now: its pipe ack gets a whole retry delay from here.
    assert s is not None
    if s.status is not RelayStatus.WRITTEN or not s.queued:
        return s, [Nothing(f"written while {s.status.name}")]
    at = now + cfg.timing.retry_delay_ms(max(s.writes, 1))
    new = Relay(
        affirmed_ms=s.affirmed_ms,
        status=s.status,
        attempt=s.attempt,
        next_at_ms=at,
        writes=s.writes,
        written_at_ms=now,
        queued=False,
        floor=s.floor,
    )
    return new, [WakeAt(at)]


def _pipe_ack(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # OK: delivered. FAILED: the terminal will not take it; Core is told and retries on its own schedule.
    # Either way the Agent's part is over (IDLE). RETRY: write again after retry_backoff_ms.
    assert s is not None and isinstance(i, PipeAck)
    if s.status is RelayStatus.IDLE:
        return s, [Nothing(f"pipe ack {i.status} after the Agent's part was over")]
    if i.status in ("OK", "FAILED"):
        ack = AckCore("PIPE_DELIVERED", i.status, i.reason if i.status == "FAILED" else "")
        return _idle(s, cfg), [Release(), ack, *_expiry(s, cfg)]
    if s.status is RelayStatus.BUFFERED:
        return s, [Nothing("RETRY ack for a buffered command")]
    at = now + cfg.timing.retry_backoff_ms
    return replace(s, next_at_ms=at), [WakeAt(at)]


def _result_seen(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    # The result proves delivery even when the pipe ack was lost; Core gets the result itself.
    return None, [Forget()]


def _due(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    assert s is not None and isinstance(i, Due)
    if s.status is RelayStatus.BUFFERED or s.next_at_ms is None or now < s.next_at_ms:
        return s, [Nothing("timer not due")]
    if s.status is RelayStatus.IDLE:
        return None, [Forget()]  # Core has not asked for hold_ms: it is done with the command
    if not i.connected:
        return _buffer(s, "account not connected")
    if s.status is RelayStatus.WRITTEN and s.queued:
        # still in the terminal's outbox (the terminal reads, slowly): wait for it to leave, not re-write
        at = now + cfg.timing.ack_timeout_ms
        return replace(s, next_at_ms=at), [WakeAt(at)]
    return _write(s, now, cfg)


def _dropped(s: Relay | None, i: RelayInput, now: int, cfg: RelaySettings) -> RelayResult:
    return None, [Forget()]


_Handler: TypeAlias = Callable[[Relay | None, RelayInput, int, RelaySettings], RelayResult]

RELAY_TABLE: dict[type, _Handler] = {
    Arrived: _arrived,
    TerminalConnected: _connected,
    WriteFailed: _write_failed,
    Busy: _busy,
    Written: _written,
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
