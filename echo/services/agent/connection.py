"""One EA connection: its state, its writer task fed by a bounded outbox, and its reader loop that turns
bytes into decoded lines. What a line means is the shell's business (``echo.services.agent.service``)."""

from __future__ import annotations

import math
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from echo.domain.types import Role
from echo.pipe.codec import EA_TO_AGENT, Decoded, DecodeFailure, LineDecoder

log = structlog.get_logger("echo.agent")

MAX_CONSECUTIVE_ERRORS = 1000
"""A peer that sends nothing but garbage this long is disconnected."""


@dataclass(eq=False)
class Connection:
    conn_id: int
    stream: trio.abc.Stream
    outbox: trio.MemorySendChannel[tuple[bytes, str]]
    """Lines for the terminal, each with the command_id it carries ("" for any other line)."""
    account_id: str | None = None
    role: Role | None = None
    stats: dict[str, int] = field(default_factory=dict)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    terminal_id: str = ""
    """What the handshake presented: a later connection for the account must present the same."""
    last_seen_ms: int = 0
    """When the last bytes arrived (any line is a sign of life)."""
    broken: bool = False
    """A write to it failed: whatever it still holds, it no longer reaches the terminal."""
    refused: bool = False
    """Its handshake was refused for good: the refusal is written, then the connection closes."""
    waiting: bool = False
    """A command found its outbox full and is held: commands wait (in order) until it has room again."""
    stalled: bool = False
    """It read nothing for ``agent.stall_ms`` while lines waited for it: cut off."""
    overflow: deque[bytes] = field(default_factory=deque)
    """Lines that are not commands (answers to a master, errors, settings) that found the outbox full: they
    go out in order as it drains (``drain``), after it."""
    overflow_max: int = 4096
    """A terminal with a full outbox and this many lines waiting besides is cut off (it reconnects)."""
    log: Any = field(default_factory=lambda: log)
    """Its logger, bound once when it opens (a bound logger's filtered-out levels cost nothing per
    line, where the module's logger binds again at every call)."""


def describe(exc: BaseException) -> dict[str, str]:
    """The error and where it was raised, in two fields (a traceback of a deep recursion would be
    thousands of lines)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "where": where}


WRITE_BATCH = 64
"""Lines already queued that the writer sends in one write (one system call, one task switch)."""
WRITE_CHUNK = 4096
"""Bytes per write: the stall clock starts again after each, so only a terminal that takes nothing for
``stall_s`` is cut off, however long a burst takes it to read."""


async def write_lines(
    conn: Connection,
    recv: trio.MemoryReceiveChannel[tuple[bytes, str]],
    stall_s: float,
    on_written: Callable[[Connection, str], Awaitable[None]],
) -> None:
    """The connection's writer: what is queued on its outbox, in order (what is already queued goes in one
    write, up to ``WRITE_BATCH`` lines, in pieces of ``WRITE_CHUNK`` bytes), until a write fails or the
    terminal takes nothing for ``stall_s`` while a piece waits (a stall: it is cut off). ``on_written``
    hears each line that left, by its command_id ("" for other lines)."""
    scope = trio.CancelScope()
    try:
        with scope:
            while True:  # the deadline is infinite here: an empty outbox is no stall
                try:
                    batch = [await recv.receive()]
                except trio.EndOfChannel:
                    return
                while len(batch) < WRITE_BATCH:
                    try:
                        batch.append(recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                data = b"".join(line for line, _ in batch)
                for at in range(0, len(data), WRITE_CHUNK):
                    scope.deadline = trio.current_time() + stall_s
                    await conn.stream.send_all(data[at : at + WRITE_CHUNK])
                scope.deadline = math.inf
                for _, command_id in batch:
                    await on_written(conn, command_id)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        conn.broken = True
        conn.cancel.cancel()
        return
    if scope.cancelled_caught:
        conn.stalled = True
        log.error(
            "agent_ea_stalled",
            conn_id=conn.conn_id,
            account_id=conn.account_id,
            stall_s=stall_s,
            queued=recv.statistics().current_buffer_used,
        )
        conn.cancel.cancel()


def reply(conn: Connection, line: bytes) -> bool:
    """Queue a line that is not a command. A terminal that reads is never cut off for answers coming
    faster than its outbox holds (a burst of a master's trades is answered together): a line that finds the
    outbox full, and every line after it, waits in the connection's overflow and goes out in order as the
    outbox drains. Only with ``overflow_max`` lines waiting besides a full outbox is the terminal cut off
    (False; it reconnects and re-handshakes). One that reads nothing is cut off by its writer's stall
    deadline."""
    if conn.overflow:
        return _wait(conn, line)
    try:
        conn.outbox.send_nowait((line, ""))
    except trio.WouldBlock:
        return _wait(conn, line)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # a refused or broken connection, closing
    return True


def _wait(conn: Connection, line: bytes) -> bool:
    if len(conn.overflow) >= conn.overflow_max:
        conn.log.error("agent_ea_too_slow", account_id=conn.account_id, waiting=len(conn.overflow))
        conn.cancel.cancel()
        return False
    if not conn.overflow:
        conn.stats["replies_waiting"] = conn.stats.get("replies_waiting", 0) + 1
        conn.log.info("agent_ea_answers_waiting", account_id=conn.account_id)
    conn.overflow.append(line)
    return True


def drain(conn: Connection) -> None:
    """Move the lines waiting in the overflow to the outbox, in order, while it has room."""
    while conn.overflow:
        try:
            conn.outbox.send_nowait((conn.overflow[0], ""))
        except trio.WouldBlock:
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.overflow.clear()
            return
        conn.overflow.popleft()


async def read_lines(
    conn: Connection,
    max_line_bytes: int,
    now_ms: Callable[[], int],
    on_failure: Callable[[Connection, DecodeFailure], None],
    on_message: Callable[[Connection, Decoded], Awaitable[None]],
    on_read: Callable[[], Awaitable[None]],
) -> None:
    """The connection's reader: until the peer closes, sends only garbage, or is refused. ``on_read``
    follows the lines of each read (one flush for all of them)."""
    decoder = LineDecoder(EA_TO_AGENT, max_line_bytes)
    consecutive_errors = 0
    while True:
        try:
            data = await conn.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        conn.last_seen_ms = now_ms()
        for event in decoder.feed(bytes(data)):
            if isinstance(event, DecodeFailure):
                consecutive_errors += 1
                on_failure(conn, event)
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                    log.error(
                        "agent_peer_sends_only_garbage", conn_id=conn.conn_id, account_id=conn.account_id
                    )
                    await on_read()
                    return
                continue
            consecutive_errors = 0
            await on_message(conn, event)
            if conn.refused:
                await on_read()
                return
        await on_read()
