"""What every simulated terminal shares: the connection to the Agent, whatever the EA's role.

``SimTerminal.run`` connects, writes the handshake (built from the subclass's role, features and symbol
mappings), lets the subclass write what must follow it, then runs the periodic writers (``heartbeat`` and
whatever the subclass adds) and the subclass's own connection tasks while it reads the Agent's lines; on
any drop it reconnects after ``reconnect_delay``. Every line goes out under one write lock, so lines from
concurrent tasks never interleave. Undecodable lines and ``error`` replies land in ``errors_received``;
every other message goes to the subclass's ``_on_message``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import trio

from echo.domain import messages as m
from echo.domain.types import Role
from echo.pipe.codec import AGENT_TO_EA, Decoded, DecodeFailure, LineDecoder, encode
from echo.sim.broker import SimBroker

DISCONNECTS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a lost connection raises while writing or reading."""

Periodic = tuple[float, Callable[[], object | None]]
"""An interval in seconds and what to write each time (nothing when it returns None)."""


def load_terminal_id(path: str | Path | None) -> str:
    """The terminal's identity: read from ``path``, or generated (and written there when there is a path),
    as the MQL4 EAs keep theirs in the terminal's files folder."""
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        if 16 <= len(text) <= 64 and all(c.isalnum() or c in "_-" for c in text):
            return text
    terminal_id = secrets.token_hex(16)
    if path is not None:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(terminal_id + "\n", encoding="ascii")
    return terminal_id


def identity_beside(state_path: str | Path | None) -> Path | None:
    """Where a simulated terminal with a state file keeps its identity: next to that file."""
    return None if state_path is None else Path(f"{state_path}.terminal_id")


class SimTerminal:
    """The connection machinery of one simulated EA; subclasses add the role's messages."""

    _role: ClassVar[Role]
    _features: ClassVar[tuple[str, ...]] = ()
    _log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(
        self,
        account_id: str,
        broker: SimBroker,
        connect: Callable[[], Awaitable[trio.abc.Stream]],
        now_ms: Callable[[], int],
        *,
        reconnect_delay: float,
        heartbeat_interval: float,
        client_semver: str,
        identity_path: str | Path | None = None,
        token: str = "",
    ) -> None:
        self.account_id = account_id
        self.broker = broker
        self._connect = connect
        self._now_ms = now_ms
        self.reconnect_delay = reconnect_delay
        self.heartbeat_interval = heartbeat_interval
        self.client_semver = client_semver
        self.terminal_id = load_terminal_id(identity_path)
        """Presented in every handshake: generated once, kept in ``identity_path`` when there is one (a
        restarted terminal presents the same), else for the life of this object."""
        self.token = token
        """The Agent's ``agent.token``, presented in every handshake."""

        self.connections = 0
        self.protocol_version = m.PROTOCOL_VERSION
        self.registration: m.SymbolRegistrationResult | None = None
        """Core's last verdict on this terminal's handshake."""
        self.feedback_ms: list[float] = []
        """Per handshake: ms from writing it to reading its ``symbol_registration_result``."""
        self._handshake_ns = 0
        self.received_ns = 0
        """When the last read from the Agent returned (``time.perf_counter_ns``)."""
        self.errors_received: list[m.ErrorReply] = []
        self._stream: trio.abc.Stream | None = None
        self._lock = trio.Lock()
        self._heartbeat_seq = 0

    @property
    def connected(self) -> bool:
        """True between a completed handshake write and the loss of that connection."""
        return self._stream is not None

    def handshake(self) -> m.Handshake:
        return m.Handshake(
            account_id=self.account_id,
            role=self._role,
            protocol_version=self.protocol_version,
            client_semver=self.client_semver,
            client_id=f"sim-{self.account_id}",
            broker=self.broker.name,
            capabilities=m.Capabilities(features=list(self._features)),
            symbols=list(self.broker.specs.values()) if self._role is Role.SLAVE else [],  # a master: none
            symbol_mappings=self._symbol_mappings(),
            terminal_id=self.terminal_id,
            token=self.token,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, handshake and serve until cancelled; reconnect after ``reconnect_delay`` on any drop."""
        started = False
        while True:
            stream: trio.abc.Stream | None = None
            try:
                stream = await self._connect()
                self.connections += 1
                async with self._lock:
                    self._handshake_ns = time.perf_counter_ns()
                    await self._send_line(stream, self.handshake())
                    await self._after_handshake(stream)
                    self._stream = stream
                if not started:
                    started = True
                    task_status.started()
                async with trio.open_nursery() as nursery:
                    for interval, make in self._periodic():
                        nursery.start_soon(self._every, stream, interval, make)
                    self._start_tasks(stream, nursery)
                    await self._read(stream, nursery)
                    nursery.cancel_scope.cancel()
            except* DISCONNECTS as group:
                self._log.info("%s: connection lost: %r", self.account_id, group.exceptions)
            finally:
                self._stream = None
                if stream is not None:
                    await trio.aclose_forcefully(stream)
            await trio.sleep(self.reconnect_delay)

    # ------------------------------------------------------------------------------------------ role hooks

    def _symbol_mappings(self) -> dict[str, str]:
        """The handshake's broker symbol -> canonical symbol map (masters only)."""
        return {}

    async def _after_handshake(self, stream: trio.abc.Stream) -> None:
        """Write what must follow the handshake on a new connection (the write lock is held)."""

    def _periodic(self) -> list[Periodic]:
        """The lines written at intervals while connected."""
        return [(self.heartbeat_interval, self._heartbeat)]

    def _start_tasks(self, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        """Start the role's own tasks for this connection; they are cancelled when it drops."""

    async def _on_message(self, stream: trio.abc.Stream, nursery: trio.Nursery, event: Decoded) -> bool:
        """Handle one decoded line from the Agent (other than ``error``); False if the role ignores it."""
        return False

    # ------------------------------------------------------------------------------------------ writing

    async def _send_line(self, stream: trio.abc.Stream, payload: object) -> None:
        """Write one line; the caller holds the write lock."""
        await stream.send_all(encode(payload, self._now_ms()))

    async def _write(self, stream: trio.abc.Stream, payload: object) -> None:
        async with self._lock:
            await self._send_line(stream, payload)

    async def _every(
        self, stream: trio.abc.Stream, interval: float, make: Callable[[], object | None]
    ) -> None:
        while True:
            await trio.sleep(interval)
            payload = make()
            if payload is not None:
                await self._write(stream, payload)

    def _heartbeat(self) -> m.Heartbeat:
        self._heartbeat_seq += 1
        return m.Heartbeat(self._heartbeat_seq)

    # ------------------------------------------------------------------------------------------ reading

    async def _read(self, stream: trio.abc.Stream, nursery: trio.Nursery) -> None:
        """Handle the Agent's lines until EOF."""
        decoder = LineDecoder(AGENT_TO_EA)
        while True:
            data = await stream.receive_some()
            self.received_ns = time.perf_counter_ns()
            if not data:
                return
            for event in decoder.feed(bytes(data)):
                if isinstance(event, DecodeFailure):
                    self._log.warning("%s: undecodable line from agent: %s", self.account_id, event.message)
                    self.errors_received.append(m.ErrorReply(event.code.value, event.message, event.ref_type))
                elif isinstance(event.payload, m.ErrorReply):
                    p = event.payload
                    self._log.warning("%s: agent error %s: %s", self.account_id, p.code, p.message)
                    self.errors_received.append(p)
                elif isinstance(event.payload, m.SymbolRegistrationResult):
                    if self._handshake_ns:
                        self.feedback_ms.append((time.perf_counter_ns() - self._handshake_ns) / 1e6)
                        self._handshake_ns = 0
                    self.registration = event.payload
                elif not await self._on_message(stream, nursery, event):
                    self._log.debug("%s: ignoring %s", self.account_id, event.type)
