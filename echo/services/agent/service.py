"""Agent: serves EA connections (through the pipe port), turns their lines into messages for Core, and
writes Core's commands to the connection of the account they are for.

Each connection has a reader (this task) and a writer task fed by a bounded channel, so one slow terminal
never delays the others: when its queue is full it is disconnected (it reconnects and re-handshakes).
Bad lines get an ``error`` reply on that connection only; the connection stays open.

Commands (execute/close/modify) go through the ack ledger: held until the terminal's
``pipe_delivery_ack``, written again on its timeout (or ``retry_backoff_ms`` after a RETRY), kept while the
terminal is offline and written when it is back, across an Agent restart too. The Agent is the one writer
of a command into its terminal and numbers every write (``attempt``) past the one before. The rules are
``echo.delivery.relay``; this module only carries out its effects and keeps the clock."""

from __future__ import annotations

import hmac
import traceback
from dataclasses import dataclass, field, replace

import structlog
import trio

from echo.delivery import relay
from echo.delivery.machine import Settings
from echo.domain import messages as m
from echo.domain.config import AgentConfig, DeliverySettings
from echo.domain.errors import ProtocolError
from echo.domain.types import Role
from echo.pipe.codec import AGENT_TO_EA, EA_TO_AGENT, Decoded, DecodeFailure, LineDecoder, decode_line, encode
from echo.ports.clock import Clock
from echo.ports.ledger import AckLedger, LedgerEntry, LedgerError
from echo.ports.pipe import PipeListener
from echo.ports.transport import AgentLink, LinkClosed
from echo.services.timers import DueTimers

log = structlog.get_logger("echo.agent")

_MASTER_TYPES = frozenset({"trade_intent", "trade_close", "trade_modify"})
_SLAVE_TYPES = frozenset(
    {"execution_result", "close_result", "modify_result", "pipe_delivery_ack", "quotes", "state_snapshot"}
)
_CHATTY_TYPES = frozenset({"quotes", "state_snapshot"})
"""Forwarded without a log line each (several per second per terminal)."""
_MAX_CONSECUTIVE_ERRORS = 1000
"""A peer that sends nothing but garbage this long is disconnected."""
_DEAD_AFTER_BEATS = 3
"""A connection with no line for this many heartbeat intervals no longer holds its account (PROTOCOL 5.6)."""
_EA_HEARTBEAT_MS = 2000
"""The EAs' own heartbeat period (their ``HeartbeatMs`` input): a shorter ``heartbeat_interval_ms`` does
not make a terminal that keeps to it look dead."""


def _describe(exc: BaseException) -> dict[str, str]:
    """The error and where it was raised, in two fields (a traceback of a deep recursion would be
    thousands of lines)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "where": where}


@dataclass(eq=False)
class Connection:
    conn_id: int
    stream: trio.abc.Stream
    outbox: trio.MemorySendChannel[bytes]
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


Command = m.ExecuteOrder | m.CloseOrder | m.ModifyOrder


@dataclass(eq=False)
class Held:
    """A command in the ack ledger."""

    account_id: str
    command: Command
    line: bytes
    state: relay.Relay


class Agent:
    def __init__(
        self,
        link: AgentLink,
        listener: PipeListener,
        clock: Clock,
        config: AgentConfig,
        delivery: DeliverySettings | None,
        ledger: AckLedger,
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
        self._ledger = ledger
        self.held: dict[str, Held] = {}
        """command_id -> the command the Agent is getting into its terminal (arrival order)."""
        self.settled: dict[str, Held] = {}
        """command_id -> a command whose part at the Agent is over for now (acknowledged, refused, or its
        writes used up), kept until Core is done with it so that a later send is numbered past its last
        write (``relay.RelayStatus.IDLE``)."""
        self._puts: dict[str, LedgerEntry] = {}
        self._deletes: set[str] = set()
        self._acks: list[m.CommandAck] = []
        self._timers = DueTimers(clock)
        self.stats: dict[str, int] = {}
        self.registration: dict[str, m.RegistrationStatus] = {}
        """account_id -> Core's last verdict on its handshake, as it passed through to the terminal."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._load_ledger()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._from_core)
            nursery.start_soon(self._retry_loop)
            await nursery.start(self._listener.serve, self._serve_connection)
            log.info(
                "agent_started",
                agent_id=self.agent_id,
                listen=self._listener.description,
                held=len(self.held),
            )
            task_status.started()

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    # ------------------------------------------------------------------------------------------- ledger

    def _relay_settings(self) -> relay.RelaySettings:
        d = self.delivery
        return relay.RelaySettings(Settings.of(d), self.config.ledger_hold_ms)

    def _load_ledger(self) -> None:
        """Commands held when the Agent last stopped wait for their terminals again (written when each
        reconnects, unless they are older than ``ledger_hold_ms`` by then)."""
        try:
            entries = self._ledger.load()
        except LedgerError as exc:
            log.error("agent_ledger_unreadable", error=str(exc))
            return
        for e in entries:
            event = decode_line(e.line.rstrip(b"\n"), AGENT_TO_EA)
            command = getattr(event, "payload", None)
            if not isinstance(command, Command) or command.command_id != e.command_id:
                log.error("agent_ledger_entry_unreadable", command_id=e.command_id, account_id=e.account_id)
                self._deletes.add(e.command_id)
                continue
            state = relay.Relay(e.affirmed_ms, relay.RelayStatus.BUFFERED, attempt=e.attempts)
            self.held[e.command_id] = Held(e.account_id, command, e.line, state)
        self._flush_ledger()
        if self.held:
            log.info("agent_ledger_loaded", held=len(self.held))

    def _relay(self, command_id: str, event: relay.RelayInput, now_ms: int) -> None:
        """Feed one input to a held command's rules and carry out the effects (ledger writes and acks to
        Core are collected; ``_flush`` sends them)."""
        held = self.held.get(command_id) or self.settled.get(command_id)
        state, effects = relay.relay_transition(
            held.state if held else None, event, now_ms, self._relay_settings()
        )
        if held is None:
            return  # only Arrived creates an entry, and _arrived builds it first
        if state is not None:
            held.state = state
            if state.status is relay.RelayStatus.IDLE:
                self.held.pop(command_id, None)
                self.settled[command_id] = held
            elif command_id in self.settled:
                self.held[command_id] = self.settled.pop(command_id)
        for effect in effects:
            if isinstance(effect, relay.Store):
                self._puts[command_id] = LedgerEntry(
                    command_id, held.account_id, held.line, held.state.affirmed_ms, held.state.attempt
                )
                self._deletes.discard(command_id)
            elif isinstance(effect, relay.Release):
                self._puts.pop(command_id, None)
                self._deletes.add(command_id)
            elif isinstance(effect, relay.Forget):
                self.held.pop(command_id, None)
                self.settled.pop(command_id, None)
                self._timers.discard(command_id)
                self._puts.pop(command_id, None)
                self._deletes.add(command_id)
            elif isinstance(effect, relay.AckCore):
                self._acks.append(
                    m.CommandAck(
                        held.account_id,
                        command_id,
                        m.AckStage(effect.stage),
                        m.AckResult(effect.result),
                        effect.reason,
                    )
                )
                if effect.result != "PENDING" or effect.stage != "AGENT_BUFFERED":
                    self._count(f"ack_{effect.stage.lower()}_{effect.result.lower()}")
                if effect.result == "FAILED":
                    log.warning(
                        "agent_command_not_delivered",
                        command_id=command_id,
                        account_id=held.account_id,
                        stage=effect.stage,
                        reason=effect.reason,
                    )
            elif isinstance(effect, relay.WakeAt):
                self._timers.at(effect.at_ms, command_id)
            elif isinstance(effect, relay.Write):
                if effect.attempt > 1:
                    self._count("rewrites")
                    log.info(
                        "agent_command_rewritten",
                        command_id=command_id,
                        account_id=held.account_id,
                        attempt=effect.attempt,
                    )
                reason = self._write(held.account_id, replace(held.command, attempt=effect.attempt), now_ms)
                if reason is not None:
                    self._relay(command_id, relay.WriteFailed(reason), now_ms)
                    return

    async def _flush(self) -> None:
        """Ledger changes in one transaction, then the acks to Core."""
        self._flush_ledger()
        acks, self._acks = self._acks, []
        for ack in acks:
            await self._to_core(ack)

    def _flush_ledger(self) -> None:
        if not self._puts and not self._deletes:
            return
        puts, deletes = list(self._puts.values()), list(self._deletes)
        self._puts, self._deletes = {}, set()
        try:
            self._ledger.apply(puts, deletes)
        except LedgerError as exc:
            # The ledger is a buffer: Core's journal re-sends whatever has no result. Delivery goes on.
            self._count("ledger_errors")
            log.error("agent_ledger_write_failed", error=str(exc), puts=len(puts), deletes=len(deletes))

    async def _retry_loop(self) -> None:
        """Keeps the clock for held commands whose pipe ack is overdue."""
        while True:
            now, due = await self._timers.next_due()
            for command_id in due:
                held = self.held.get(command_id) or self.settled.get(command_id)
                if held is not None:
                    self._relay(command_id, relay.Due(held.account_id in self.connections), now)
            await self._flush()

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
            now = self._clock.now_ms()
            for msg in batch:
                if isinstance(msg, m.DeliveryHeartbeat):
                    self._apply_delivery(msg.config, now)
                elif isinstance(msg, m.DropCommand):
                    if msg.command_id in self.held or msg.command_id in self.settled:
                        log.info("agent_command_dropped", command_id=msg.command_id, reason=msg.reason)
                        self._relay(msg.command_id, relay.Dropped(), now)
                elif isinstance(msg.message, Command):
                    self._arrived(msg.account_id, msg.message, now)
                elif isinstance(msg.message, m.SymbolRegistrationResult):
                    self.registration[msg.account_id] = msg.message.status
                    self._write(msg.account_id, msg.message, now)
                elif self._write(msg.account_id, msg.message, now) is not None:
                    # Replies to masters and registration results are not ledgered: a master re-sends an
                    # unacknowledged intent, and a terminal gets its registration at every handshake.
                    log.info(
                        "agent_reply_not_delivered",
                        account_id=msg.account_id,
                        message=type(msg.message).__name__,
                    )
            await self._flush()

    def _arrived(self, account_id: str, command: Command, now_ms: int) -> None:
        if self.registration.get(account_id) is m.RegistrationStatus.REJECTED:
            # Core does not send to a REJECTED account; this catches a command that crossed the verdict.
            self._count("blocked_rejected_account")
            log.error(
                "agent_command_blocked",
                account_id=account_id,
                command_id=command.command_id,
                reason="account REJECTED by its handshake evaluation",
            )
            self._acks.append(
                m.CommandAck(
                    account_id,
                    command.command_id,
                    m.AckStage.AGENT_BUFFERED,
                    m.AckResult.FAILED,
                    "account REJECTED by its handshake evaluation",
                )
            )
            return
        held = self.held.get(command.command_id) or self.settled.get(command.command_id)
        if held is None:
            held = Held(account_id, command, encode(command, now_ms), relay.Relay(now_ms))
            self.held[command.command_id] = held
        elif held.account_id != account_id:
            log.error(
                "agent_command_account_mismatch",
                command_id=command.command_id,
                held_for=held.account_id,
                sent_for=account_id,
            )
            return
        held.command = command
        self._relay(
            command.command_id, relay.Arrived(account_id in self.connections, command.attempt), now_ms
        )

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

    def _write(self, account_id: str, message: m.ToEA, now_ms: int) -> str | None:
        """Queue a message on its account's connection; returns why it could not be, or None."""
        conn = self.connections.get(account_id)
        if conn is None:
            return "account not connected"
        try:
            conn.outbox.send_nowait(encode(message, now_ms))
        except trio.WouldBlock:
            log.error("agent_ea_too_slow", account_id=account_id, queued=self.config.outbox_lines)
            conn.cancel.cancel()
            return "terminal too slow"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return "connection closing"
        return None

    # ----------------------------------------------------------------------------------------- from EAs

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        self._next_conn += 1
        send, recv = trio.open_memory_channel[bytes](self.config.outbox_lines)
        conn = Connection(self._next_conn, stream, send, last_seen_ms=self._clock.now_ms())
        clog = log.bind(conn_id=conn.conn_id)
        clog.debug("agent_connection_opened")
        try:
            with conn.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, conn, recv)
                    await self._reader(conn)
                    if conn.refused:  # the writer sends what is queued (the refusal), then ends
                        conn.outbox.close()
                        nursery.cancel_scope.deadline = trio.current_time() + 1.0
                    else:
                        nursery.cancel_scope.cancel()
        except Exception as exc:  # whatever one connection causes ends that connection only
            self._count("connection_failures")
            clog.error("agent_connection_failed", account_id=conn.account_id, **_describe(exc))
        finally:
            with trio.CancelScope(shield=True):
                await self._disconnected(conn)
                await trio.aclose_forcefully(stream)

    async def _writer(self, conn: Connection, recv: trio.MemoryReceiveChannel[bytes]) -> None:
        try:
            async for line in recv:
                await conn.stream.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.broken = True
            conn.cancel.cancel()

    def _reply(self, conn: Connection, line: bytes) -> None:
        try:
            conn.outbox.send_nowait(line)
        except trio.WouldBlock:
            conn.cancel.cancel()
        except trio.ClosedResourceError:
            pass  # a refused connection, closing

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
            conn.last_seen_ms = self._clock.now_ms()
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
                if conn.refused:
                    return

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
        if isinstance(payload, m.PipeDeliveryAck):
            self._on_pipe_ack(conn, payload)
            await self._flush()
            return
        if isinstance(payload, m.ExecutionResult | m.CloseResult | m.ModifyResult):
            held = self.held.get(payload.command_id) or self.settled.get(payload.command_id)
            if held is not None and held.account_id == conn.account_id:
                self._relay(payload.command_id, relay.ResultSeen(), self._clock.now_ms())
                self._flush_ledger()
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

    def _on_pipe_ack(self, conn: Connection, ack: m.PipeDeliveryAck) -> None:
        held = self.held.get(ack.command_id)
        if held is None or held.account_id != conn.account_id:
            log.debug("agent_pipe_ack_stale", account_id=conn.account_id, command_id=ack.command_id)
            return
        if ack.status is not m.DeliveryStatus.OK:
            log.warning(
                "agent_pipe_ack_not_ok",
                account_id=conn.account_id,
                command_id=ack.command_id,
                status=ack.status.value,
                reason=ack.reason,
            )
        self._relay(ack.command_id, relay.PipeAck(ack.status.value, ack.reason), self._clock.now_ms())

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
        if self.config.token and not hmac.compare_digest(hs.token.encode(), self.config.token.encode()):
            self._count("handshakes_unauthorized")
            self._refuse(
                conn,
                hs,
                ProtocolError.ERR_PROTOCOL_UNAUTHORIZED,
                "the handshake must carry this agent's token (agent.token; EA input AgentToken)"
                if not hs.token
                else "the handshake's token is not this agent's agent.token",
            )
            return
        old = self.connections.get(hs.account_id)
        if old is not None and old is not conn:
            dead = self._dead(old)
            same = bool(hs.terminal_id) and hmac.compare_digest(hs.terminal_id, old.terminal_id)
            if dead is None and not same:
                self._count("handshakes_account_in_use")
                self._refuse(
                    conn,
                    hs,
                    ProtocolError.ERR_PROTOCOL_ACCOUNT_IN_USE,
                    f"account {hs.account_id} is connected from another terminal; a new connection takes "
                    "it over only with that terminal's terminal_id, or once that connection is dead "
                    f"(no line for {_DEAD_AFTER_BEATS} x heartbeat_interval_ms, at least "
                    f"{_DEAD_AFTER_BEATS * _EA_HEARTBEAT_MS // 1000} s)",
                )
                return
            log.warning(
                "agent_connection_replaced",
                account_id=hs.account_id,
                old_conn=old.conn_id,
                new_conn=conn.conn_id,
                reason=dead or "same terminal_id",
            )
            old.account_id = None  # the old connection no longer speaks for the account
            old.cancel.cancel()
        conn.account_id, conn.role, conn.terminal_id = hs.account_id, hs.role, hs.terminal_id
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
        # The terminal learns the delivery timing at once, then gets what the ledger holds for it (in the
        # order Core sent it); Core's evaluation of its symbols follows.
        now = self._clock.now_ms()
        self._reply(conn, encode(self.delivery, now))
        waiting = [cid for cid, held in self.held.items() if held.account_id == hs.account_id]
        for command_id in waiting:
            self._relay(command_id, relay.TerminalConnected(), now)
        if waiting:
            log.info("agent_ledger_flushed_to_terminal", account_id=hs.account_id, commands=len(waiting))
        await self._flush()
        # the terminal's proofs stay here: Core neither needs nor records them
        await self._to_core(m.AccountOnline(self.agent_id, replace(hs, terminal_id="", token=""), now))

    def _dead(self, conn: Connection) -> str | None:
        """Why a connection no longer speaks for its terminal, or None while it does."""
        if conn.broken:
            return "broken write"
        silent = self._clock.now_ms() - conn.last_seen_ms
        if silent > _DEAD_AFTER_BEATS * max(self.delivery.heartbeat_interval_ms, _EA_HEARTBEAT_MS):
            return f"no line for {silent} ms"
        return None

    def _refuse(self, conn: Connection, hs: m.Handshake, code: ProtocolError, why: str) -> None:
        """Refuse a handshake for good: the error line is written, then the connection is closed (the EA
        reconnects and tries again; the account's live connection, if any, is untouched)."""
        log.warning(
            "agent_handshake_refused",
            conn_id=conn.conn_id,
            account_id=hs.account_id,
            role=hs.role.value,
            code=code.value,
            reason=why,
            live_conn=getattr(self.connections.get(hs.account_id), "conn_id", None),
        )
        self.protocol_errors += 1
        self._reply(conn, DecodeFailure(code, why, "handshake").reply(self._clock.now_ms()))
        conn.refused = True

    async def _disconnected(self, conn: Connection) -> None:
        account = conn.account_id
        if account is None or self.connections.get(account) is not conn:
            return
        del self.connections[account]
        if self.registration.get(account) is m.RegistrationStatus.REJECTED:
            del self.registration[account]  # an invented account leaves nothing behind here either
        log.info("agent_account_disconnected", account_id=account, conn_id=conn.conn_id)
        await self._to_core(m.AccountOffline(self.agent_id, account, self._clock.now_ms()))
