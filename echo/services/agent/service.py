"""Agent: serves EA connections (through the pipe port), turns their lines into messages for Core, and
writes Core's commands to the connection of the account they are for.

Each connection has a reader (this task) and a writer task fed by a bounded channel, so one slow terminal
never delays the others: when its queue is full it is disconnected (it reconnects and re-handshakes).
Bad lines get an ``error`` reply on that connection only; the connection stays open."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
import trio

from echo.domain import messages as m
from echo.domain.config import AgentConfig, DeliverySettings
from echo.domain.errors import ProtocolError
from echo.domain.types import Role
from echo.pipe.codec import EA_TO_AGENT, Decoded, DecodeFailure, LineDecoder, encode
from echo.ports.clock import Clock
from echo.ports.pipe import PipeListener
from echo.ports.transport import AgentLink, LinkClosed

log = structlog.get_logger("echo.agent")

_MASTER_TYPES = frozenset({"trade_intent", "trade_close", "trade_modify"})
_SLAVE_TYPES = frozenset(
    {"execution_result", "close_result", "modify_result", "pipe_delivery_ack", "quotes", "state_snapshot"}
)
_CHATTY_TYPES = frozenset({"pipe_delivery_ack", "quotes", "state_snapshot"})
"""Forwarded without a log line each (several per second per terminal)."""
_MAX_CONSECUTIVE_ERRORS = 1000
"""A peer that sends nothing but garbage this long is disconnected."""


@dataclass(eq=False)
class Connection:
    conn_id: int
    stream: trio.abc.Stream
    outbox: trio.MemorySendChannel[bytes]
    account_id: str | None = None
    role: Role | None = None
    stats: dict[str, int] = field(default_factory=dict)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)


class Agent:
    def __init__(
        self,
        link: AgentLink,
        listener: PipeListener,
        clock: Clock,
        config: AgentConfig,
        delivery: DeliverySettings | None = None,
    ) -> None:
        self._link = link
        self._listener = listener
        self._clock = clock
        self.config = config
        self.agent_id = config.agent_id
        d = delivery or DeliverySettings()
        self.delivery = m.DeliveryConfig(
            d.ack_timeout_ms, d.retry_backoff_ms, d.max_retries, d.heartbeat_interval_ms
        )
        self.connections: dict[str, Connection] = {}
        """account_id -> its current (handshaken) connection."""
        self._next_conn = 0
        self.protocol_errors = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._from_core)
            await nursery.start(self._listener.serve, self._serve_connection)
            log.info("agent_started", agent_id=self.agent_id, listen=self._listener.description)
            task_status.started()

    # ---------------------------------------------------------------------------------------- from core

    async def _from_core(self) -> None:
        while True:
            try:
                # A fan-out arrives as a burst: queue all of it to the terminals before yielding, so every
                # slave's writer starts at once instead of one per scheduler turn.
                batch = await self._link.receive_many(256)
            except LinkClosed:
                log.error("agent_core_link_closed", agent_id=self.agent_id)
                return
            failed: list[m.DeliveryFailed] = []
            now = self._clock.now_ms()
            for msg in batch:
                if isinstance(msg, m.DeliveryHeartbeat):
                    self._apply_delivery(msg.config, now)
                    continue
                reason = self._deliver(msg, now)
                command_id = getattr(msg.message, "command_id", None)
                if reason is not None and command_id is not None:
                    failed.append(m.DeliveryFailed(msg.account_id, command_id, reason))
            for f in failed:
                await self._to_core(f)

    def _apply_delivery(self, config: m.DeliveryConfig, now_ms: int) -> None:
        """New delivery settings from Core: every connected terminal hears them at once."""
        if config == self.delivery:
            return
        self.delivery = config
        log.info(
            "agent_delivery_config",
            ack_timeout_ms=config.ack_timeout_ms,
            retry_backoff_ms=config.retry_backoff_ms,
            max_retries=config.max_retries,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            terminals=len(self.connections),
        )
        line = encode(config, now_ms)
        for conn in self.connections.values():
            self._reply(conn, line)

    def _deliver(self, msg: m.ToAccount, now_ms: int) -> str | None:
        """Queue a message for its account's connection; returns why it could not be, or None."""
        conn = self.connections.get(msg.account_id)
        inner = msg.message
        if conn is None:
            log.warning(
                "agent_account_not_connected",
                account_id=msg.account_id,
                message=type(inner).__name__,
                command_id=getattr(inner, "command_id", None),
            )
            return "account not connected"
        try:
            conn.outbox.send_nowait(encode(inner, now_ms))
        except trio.WouldBlock:
            log.error("agent_ea_too_slow", account_id=msg.account_id, queued=self.config.outbox_lines)
            conn.cancel.cancel()
            return "terminal too slow"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return "connection closing"
        return None

    # ----------------------------------------------------------------------------------------- from EAs

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        self._next_conn += 1
        send, recv = trio.open_memory_channel[bytes](self.config.outbox_lines)
        conn = Connection(self._next_conn, stream, send)
        clog = log.bind(conn_id=conn.conn_id)
        clog.debug("agent_connection_opened")
        try:
            with conn.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn, recv)
                    await self._reader(conn)
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._disconnected(conn)
                await trio.aclose_forcefully(stream)

    async def _writer(self, conn: Connection, recv: trio.MemoryReceiveChannel[bytes]) -> None:
        try:
            async for line in recv:
                await conn.stream.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.cancel.cancel()

    def _reply(self, conn: Connection, line: bytes) -> None:
        try:
            conn.outbox.send_nowait(line)
        except trio.WouldBlock:
            conn.cancel.cancel()

    async def _reader(self, conn: Connection) -> None:
        decoder = LineDecoder(EA_TO_AGENT, self.config.max_line_bytes)
        consecutive_errors = 0
        while True:
            try:
                data = await conn.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            for event in decoder.feed(bytes(data)):
                if isinstance(event, DecodeFailure):
                    consecutive_errors += 1
                    self._protocol_error(conn, event)
                    if consecutive_errors >= _MAX_CONSECUTIVE_ERRORS:
                        log.error(
                            "agent_peer_sends_only_garbage", conn_id=conn.conn_id, account_id=conn.account_id
                        )
                        return
                    continue
                consecutive_errors = 0
                await self._on_message(conn, event)

    def _protocol_error(self, conn: Connection, failure: DecodeFailure) -> None:
        self.protocol_errors += 1
        log.warning(
            "agent_protocol_error",
            conn_id=conn.conn_id,
            account_id=conn.account_id,
            code=failure.code.value,
            error=failure.message[:300],
            ref_type=failure.ref_type,
        )
        self._reply(conn, failure.reply(self._clock.now_ms()))

    async def _on_message(self, conn: Connection, ev: Decoded) -> None:
        payload = ev.payload
        if isinstance(payload, m.Handshake):
            await self._on_handshake(conn, payload)
            return
        if isinstance(payload, m.Heartbeat):
            return
        if isinstance(payload, m.ErrorReply):
            log.warning(
                "agent_ea_reported_error",
                account_id=conn.account_id,
                code=payload.code,
                error=payload.message[:300],
                ref_type=payload.ref_type,
            )
            return
        if conn.account_id is None:
            self._protocol_error(
                conn,
                DecodeFailure(
                    ProtocolError.ERR_PROTOCOL_NOT_HANDSHAKEN, f"{ev.type} before handshake", ev.type
                ),
            )
            return
        allowed = _MASTER_TYPES if conn.role is Role.MASTER else _SLAVE_TYPES
        if ev.type not in allowed:
            self._protocol_error(
                conn,
                DecodeFailure(
                    ProtocolError.ERR_PROTOCOL_UNEXPECTED_MESSAGE,
                    f"{ev.type} is not accepted from a {conn.role.value if conn.role else '?'} terminal",
                    ev.type,
                ),
            )
            return
        if ev.type not in _CHATTY_TYPES:
            log.debug(
                "agent_forward",
                account_id=conn.account_id,
                type=ev.type,
                trade_id=getattr(payload, "trade_id", None),
                trace_id=getattr(payload, "trace_id", None),
                command_id=getattr(payload, "command_id", None),
            )
        await self._to_core(m.FromAccount(conn.account_id, payload, self._clock.now_ms()))

    async def _to_core(self, msg: m.AgentToCore) -> None:
        try:
            await self._link.send(msg)
        except LinkClosed:
            log.error("agent_core_unreachable", message=type(msg).__name__)

    async def _on_handshake(self, conn: Connection, hs: m.Handshake) -> None:
        if conn.account_id is not None and conn.account_id != hs.account_id:
            self._protocol_error(
                conn,
                DecodeFailure(
                    ProtocolError.ERR_PROTOCOL_INVALID_VALUE,
                    f"this connection is account {conn.account_id}; a new account needs a new connection",
                    "handshake",
                ),
            )
            return
        if hs.protocol_version > m.PROTOCOL_VERSION:
            self._protocol_error(
                conn,
                DecodeFailure(
                    ProtocolError.ERR_PROTOCOL_VERSION_UNSUPPORTED,
                    f"protocol_version {hs.protocol_version} is newer than this agent's {m.PROTOCOL_VERSION}",
                    "handshake",
                ),
            )
            return
        old = self.connections.get(hs.account_id)
        if old is not None and old is not conn:
            log.warning(
                "agent_connection_replaced",
                account_id=hs.account_id,
                old_conn=old.conn_id,
                new_conn=conn.conn_id,
            )
            old.account_id = None  # the old connection no longer speaks for the account
            old.cancel.cancel()
        conn.account_id, conn.role = hs.account_id, hs.role
        self.connections[hs.account_id] = conn
        log.info(
            "agent_handshake",
            conn_id=conn.conn_id,
            account_id=hs.account_id,
            role=hs.role.value,
            symbols=len(hs.symbols),
            protocol_version=hs.protocol_version,
            client_semver=hs.client_semver,
            legacy=hs.protocol_version < m.PROTOCOL_VERSION,
        )
        # The terminal learns the delivery timing at once; Core's evaluation of its symbols follows.
        self._reply(conn, encode(self.delivery, self._clock.now_ms()))
        await self._to_core(m.AccountOnline(self.agent_id, hs, self._clock.now_ms()))

    async def _disconnected(self, conn: Connection) -> None:
        account = conn.account_id
        if account is None or self.connections.get(account) is not conn:
            return
        del self.connections[account]
        log.info("agent_account_disconnected", account_id=account, conn_id=conn.conn_id)
        await self._to_core(m.AccountOffline(self.agent_id, account, self._clock.now_ms()))
