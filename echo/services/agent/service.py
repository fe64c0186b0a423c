"""Agent: the async shell that serves EA connections (through the pipe port), turns their lines into
messages for Core, and writes Core's commands to the connection of the account they are for.

Each connection has a reader (this task) and a writer task fed by a bounded channel, so one slow terminal
never delays the others. A terminal that reads slowly is not cut off: once its outbox holds
``COMMAND_ROOM`` of ``agent.outbox_lines``, further commands are held in the book (Core is told they are
buffered) and written, in order, as it reads. Only a terminal that reads nothing for ``agent.stall_ms``
while lines wait for it is disconnected (it reconnects and re-handshakes).
Bad lines get an ``error`` reply on that connection only; the connection stays open.

Commands (execute/close/modify) go through the ack ledger: held until the terminal's
``pipe_delivery_ack``, written again on its timeout (or ``retry_backoff_ms`` after a RETRY), kept while the
terminal is offline and written when it is back, across an Agent restart too. The Agent is the one writer
of a command into its terminal and numbers every write (``attempt``) past the one before. The rules are
``echo.delivery.relay``; the bookkeeping is ``book``, what a connection may do is ``admission``, one
connection's reader and writer are ``connection``; this module wires them to Core's link and the clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import structlog
import trio

from echo.delivery import relay
from echo.delivery.machine import Settings
from echo.domain import messages as m
from echo.domain.config import AgentConfig, DeliverySettings
from echo.domain.errors import ProtocolError
from echo.pipe.codec import Decoded, DecodeFailure, encode
from echo.ports.clock import Clock
from echo.ports.ledger import AckLedger
from echo.ports.pipe import PipeListener
from echo.ports.transport import AgentLink, LinkClosed
from echo.services import instruments, tracing
from echo.services.agent import admission
from echo.services.agent.book import BUSY, Command, CommandBook, Held, count
from echo.services.agent.connection import Connection, describe, drain, read_lines, reply, write_lines
from echo.services.timers import DueTimers

log = structlog.get_logger("echo.agent")


def _remember(memory: dict[str, str], key: str, value: str) -> None:
    """Bounded: the oldest entry goes when the memory is full (a command that never came back)."""
    memory.pop(key, None)
    memory[key] = value
    if len(memory) > _TRACE_MEMORY:
        del memory[next(iter(memory))]


def _remember_write(memory: dict[str, tracing.Deferred], key: str, write: tracing.Deferred) -> None:
    """As ``_remember``; a write that leaves (written again, or forgotten) is ended then."""
    old = memory.pop(key, None)
    if old is not None:
        old.finish(written_again=True)
    memory[key] = write
    if len(memory) > _TRACE_MEMORY:
        memory.pop(next(iter(memory))).finish(forgotten=True)


_TRACED = (m.TradeIntent, m.TradeClose, m.TradeModify)
"""A master's events: each starts (or continues) its trade's trace at the Agent."""
_RESULTS = (m.ExecutionResult, m.CloseResult, m.ModifyResult)
_TRACE_MEMORY = 10_000
"""Commands whose last write's span the Agent remembers (for the slave's ack and result)."""

COMMAND_ROOM = 0.75
"""Share of a connection's outbox commands may fill; the rest is kept for other lines (replies, settings)."""

_CHATTY_TYPES = frozenset({"quotes", "state_snapshot"})
"""Forwarded without a log line each (several per second per terminal)."""


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
        self._settings_of: tuple[m.DeliveryConfig, AgentConfig, relay.RelaySettings] = (
            self.delivery,
            config,
            relay.RelaySettings(Settings.of(self.delivery), config.ledger_hold_ms),
        )
        self.connections: dict[str, Connection] = {}
        """account_id -> its current (handshaken) connection."""
        self._next_conn = 0
        self.protocol_errors = 0
        self._timers = DueTimers(clock)
        self.stats: dict[str, int] = {}
        self.book = CommandBook(ledger, self._timers, self._write, self._relay_settings, self.stats)
        self.registration: dict[str, m.RegistrationStatus] = {}
        """account_id -> Core's last verdict on its handshake, as it passed through to the terminal."""
        self._trace_from_core: dict[str, str] = {}
        """command_id -> the traceparent of Core's send (traces on only)."""
        self._trace_writes: dict[str, tracing.Deferred] = {}
        """command_id -> the span of the Agent's last write of it, open until its result (traces on only)."""
        self._for_core: list[m.AgentToCore] = []
        """Acks and terminals' messages for Core, in order, until the next flush."""
        instruments.observe(self, instruments.agent_gauges)

    @property
    def held(self) -> dict[str, Held]:
        """command_id -> the command the Agent is getting into its terminal (arrival order)."""
        return self.book.held

    @property
    def settled(self) -> dict[str, Held]:
        """command_id -> a command whose part at the Agent is over for now (``CommandBook.settled``)."""
        return self.book.settled

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.book.load()
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
        count(self.stats, key, n)

    # ------------------------------------------------------------------------------------------- ledger

    def _relay_settings(self) -> relay.RelaySettings:
        """The rules' settings, built again only when the delivery settings or the config changed (the
        book asks at every relay input)."""
        d, config = self.delivery, self.config
        if d is not self._settings_of[0] or config is not self._settings_of[1]:
            self._settings_of = (d, config, relay.RelaySettings(Settings.of(d), config.ledger_hold_ms))
        return self._settings_of[2]

    async def _flush(self) -> None:
        """Ledger changes in one transaction, then what waits for Core (the acks and the terminals'
        messages, in the order they came about)."""
        self.book.flush_ledger()
        queue, self._for_core = self._for_core, []
        queue += self.book.take_acks()
        for i, msg in enumerate(queue):
            try:
                await self._to_core(msg)
            except BaseException:  # cancelled (the connection that flushed is closing): the next flush
                self._for_core[:0] = queue[i:]  # sends what is left, in order
                raise

    def _for_core_later(self, msg: m.AgentToCore) -> None:
        """Queue a terminal's message for Core: sent at the next flush (at the latest when the read it came
        in is handled), after the acks that came about before it."""
        self._for_core += self.book.take_acks()
        self._for_core.append(msg)

    async def _retry_loop(self) -> None:
        """Keeps the clock for held commands whose pipe ack is overdue."""
        while True:
            now, due = await self._timers.next_due()
            for command_id in due:
                held = self.book.find(command_id)
                if held is not None:
                    self.book.relay(command_id, relay.Due(held.account_id in self.connections), now)
            await self._flush()

    # ---------------------------------------------------------------------------------------- from core

    async def _from_core(self) -> None:
        while True:
            try:
                # A fan-out arrives as a burst: taken at once, so the writers start without a scheduler
                # turn per command.
                batch = await self._link.receive_many(256)
            except LinkClosed:
                log.error("agent_core_link_closed", agent_id=self.agent_id)
                return
            now = self._clock.now_ms()
            for n, msg in enumerate(batch, 1):
                if n == 2:
                    # The first line leaves (its writer runs) while the rest of the burst is queued: the
                    # first slave does not wait for the other slaves' commands (~20 us each).
                    await trio.lowlevel.cancel_shielded_checkpoint()
                if isinstance(msg, m.DeliveryHeartbeat):
                    self._apply_delivery(msg.config, now)
                elif isinstance(msg, m.DropCommand):
                    if msg.command_id in self.held or msg.command_id in self.settled:
                        log.info("agent_command_dropped", command_id=msg.command_id, reason=msg.reason)
                        if tracing.ON and (write := self._trace_writes.pop(msg.command_id, None)):
                            write.add_event("agent.command.dropped", {"reason": msg.reason})
                            write.finish()
                        self.book.relay(msg.command_id, relay.Dropped(), now)
                elif isinstance(msg.message, Command):
                    if tracing.ON and tracing.sampled(msg.traceparent):
                        _remember(self._trace_from_core, msg.message.command_id, msg.traceparent)
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
            if len(batch) > 1:
                # The writers send what is queued before the ledger's commit (a command written and not
                # yet in the ledger is one Core's journal still holds: a restart re-sends it).
                await trio.lowlevel.cancel_shielded_checkpoint()
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
            self.book.acks.append(
                m.CommandAck(
                    account_id,
                    command.command_id,
                    m.AckStage.AGENT_BUFFERED,
                    m.AckResult.FAILED,
                    "account REJECTED by its handshake evaluation",
                )
            )
            return
        self.book.arrived(account_id, command, account_id in self.connections, now_ms)

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
            reply(conn, line)

    def _write(self, account_id: str, message: m.ToEA, now_ms: int, line: bytes | None = None) -> str | None:
        """Queue a message on its account's connection; returns why it could not be, or None. A command
        finds no room (``BUSY``) while the terminal has not read what is queued before it."""
        conn = self.connections.get(account_id)
        if conn is None:
            return "account not connected"
        command_id = message.command_id if isinstance(message, Command) else ""
        if command_id:
            room = int(self.config.outbox_lines * COMMAND_ROOM)
            if conn.waiting or conn.outbox.statistics().current_buffer_used >= room:
                if not conn.waiting:
                    self._count("terminal_busy")
                    log.info("agent_ea_busy", account_id=account_id, queued=room)
                conn.waiting = True
                return BUSY
        if not command_id:
            if not reply(conn, line or encode(message, now_ms)):
                return "terminal too slow"
            return None
        if tracing.ON and isinstance(message, Command):
            self._trace_write(account_id, message)
        try:
            conn.outbox.send_nowait((line or encode(message, now_ms), command_id))
        except trio.WouldBlock:
            log.error("agent_ea_too_slow", account_id=account_id, queued=self.config.outbox_lines)
            conn.cancel.cancel()
            return "terminal too slow"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return "connection closing"
        return None

    def _trace_write(self, account_id: str, command: Command) -> None:
        """The span of a command at its slave: from the Agent's write (under Core's span that sent it) to
        the slave's result; the slave's delivery ack and result are its events. A write again (a retry)
        ends the span of the write before and opens its own."""
        cid = command.command_id
        parent = self._trace_from_core.get(cid)
        if parent is None:  # no span of Core's for it, or its trade is outside the sample
            return
        write = tracing.Deferred(
            "agent.command.write",
            command.trace_id,
            parent,
            {"account_id": account_id, "command_id": cid},
        )
        _remember_write(self._trace_writes, cid, write)

    def _trace_slave(self, event: str, command_id: str, ea_ms: int, attrs: dict[str, Any]) -> None:
        """The slave's delivery ack or result, as an event of the span of its command's write (with the
        terminal's own timestamp); a result ends that span."""
        write = self._trace_writes.get(command_id)
        if write is None:
            return
        write.add_event(event, {"ea_timestamp_ms": ea_ms, **attrs})
        if event == "slave.result":
            del self._trace_writes[command_id]
            self._trace_from_core.pop(command_id, None)
            write.finish()

    async def _on_written(self, conn: Connection, command_id: str) -> None:
        """A line left for the terminal: a command's wait for its pipe ack starts now; once the outbox has
        drained to half its command room, the held commands go out in order."""
        now = self._clock.now_ms()
        if command_id:
            self.book.relay(command_id, relay.Written(), now)
        if conn.overflow:
            drain(conn)
        if not conn.waiting or conn.account_id is None or self.connections.get(conn.account_id) is not conn:
            return
        if conn.outbox.statistics().current_buffer_used > int(self.config.outbox_lines * COMMAND_ROOM) // 2:
            return
        conn.waiting = False
        account = conn.account_id
        waiting = [
            cid
            for cid, held in self.held.items()
            if held.account_id == account and held.state.status is relay.RelayStatus.BUFFERED
        ]
        for cid in waiting:
            self.book.relay(cid, relay.TerminalConnected(), now)
            if conn.waiting:
                break
        await self._flush()

    # ----------------------------------------------------------------------------------------- from EAs

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        self._next_conn += 1
        send, recv = trio.open_memory_channel[tuple[bytes, str]](self.config.outbox_lines)
        conn = Connection(
            self._next_conn,
            stream,
            send,
            last_seen_ms=self._clock.now_ms(),
            overflow_max=self.config.outbox_lines,
        )
        clog = conn.log = log.bind(conn_id=conn.conn_id)
        clog.debug("agent_connection_opened")
        try:
            with conn.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        write_lines, conn, recv, self.config.stall_ms / 1000.0, self._on_written
                    )
                    await read_lines(
                        conn,
                        self.config.max_line_bytes,
                        self._clock.now_ms,
                        self._protocol_error,
                        self._on_message,
                        self._flush,
                    )
                    if conn.refused:  # the writer sends what is queued (the refusal), then ends
                        conn.outbox.close()
                        nursery.cancel_scope.deadline = trio.current_time() + 1.0
                    else:
                        nursery.cancel_scope.cancel()
        except Exception as exc:  # whatever one connection causes ends that connection only
            self._count("connection_failures")
            clog.error("agent_connection_failed", account_id=conn.account_id, **describe(exc))
        finally:
            with trio.CancelScope(shield=True):
                await self._disconnected(conn)
                await trio.aclose_forcefully(stream)

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
        reply(conn, failure.reply(self._clock.now_ms()))

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
        account_id = admission.gate(conn.account_id, conn.role, ev.type)
        if isinstance(account_id, DecodeFailure):
            self._protocol_error(conn, account_id)
            return
        if isinstance(payload, m.PipeDeliveryAck):
            if tracing.ON:
                attrs = {"status": payload.status.value}
                self._trace_slave("slave.delivery_ack", payload.command_id, ev.timestamp_ms, attrs)
            self._on_pipe_ack(conn, payload)
            return
        if isinstance(payload, m.ExecutionResult | m.CloseResult | m.ModifyResult):
            held = self.book.find(payload.command_id)
            if held is not None and held.account_id == conn.account_id:
                # the ledger lets go of it at the flush that sends the result on, before the result
                self.book.relay(payload.command_id, relay.ResultSeen(), self._clock.now_ms())
        if ev.type not in _CHATTY_TYPES:
            conn.log.debug(
                "agent_forward",
                account_id=conn.account_id,
                type=ev.type,
                trade_id=getattr(payload, "trade_id", None),
                trace_id=getattr(payload, "trace_id", None),
                command_id=getattr(payload, "command_id", None),
            )
        if tracing.ON:
            if isinstance(payload, _TRACED):
                await self._flush()  # what came before it goes first
                await self._forward_traced(account_id, payload, ev.timestamp_ms)
                return
            if isinstance(payload, _RESULTS):
                result: dict[str, Any] = {"success": payload.success, "error_code": payload.error_code.value}
                self._trace_slave("slave.result", payload.command_id, ev.timestamp_ms, result)
        self._for_core_later(m.FromAccount(account_id, payload, self._clock.now_ms()))

    async def _forward_traced(
        self, account_id: str, payload: m.TradeIntent | m.TradeClose | m.TradeModify, ea_ms: int
    ) -> None:
        """A master's event, the trade's first hop: forwarded to Core with the traceparent of its span."""
        span = tracing.start(
            "agent.intent.receive",
            payload.trace_id,
            attributes={"account_id": account_id, "trade_id": payload.trade_id, "ea_timestamp_ms": ea_ms},
        )
        try:
            with tracing.use(span):
                msg = m.FromAccount(account_id, payload, self._clock.now_ms(), tracing.traceparent_of(span))
                await self._to_core(msg)
        finally:
            span.end()

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
        instruments.pipe_acked(held, ack.status.value, now := self._clock.now_ms())
        self.book.relay(ack.command_id, relay.PipeAck(ack.status.value, ack.reason), now)

    async def _to_core(self, msg: m.AgentToCore) -> None:
        try:
            await self._link.send(msg)
        except LinkClosed:
            log.error("agent_core_unreachable", message=type(msg).__name__)

    async def _on_handshake(self, conn: Connection, hs: m.Handshake) -> None:
        await self._flush()  # what came before it goes first
        old = self.connections.get(hs.account_id)
        verdict = admission.judge_handshake(
            conn, hs, self.config.token, old, self._clock.now_ms(), self.delivery.heartbeat_interval_ms
        )
        if isinstance(verdict, admission.Reject):
            self._protocol_error(conn, verdict.failure)
            return
        if isinstance(verdict, admission.Refuse):
            self._count(verdict.counter)
            self._refuse(conn, hs, verdict.code, verdict.why)
            return
        if old is not None and verdict.replaces is not None:
            log.warning(
                "agent_connection_replaced",
                account_id=hs.account_id,
                old_conn=old.conn_id,
                new_conn=conn.conn_id,
                reason=verdict.replaces,
            )
            old.account_id = None  # the old connection no longer speaks for the account
            old.cancel.cancel()
        conn.account_id, conn.role, conn.terminal_id = hs.account_id, hs.role, hs.terminal_id
        self.connections[hs.account_id] = conn
        instruments.terminal_connected(hs.account_id)
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
        reply(conn, encode(self.delivery, now))
        waiting = [cid for cid, held in self.held.items() if held.account_id == hs.account_id]
        for command_id in waiting:
            self.book.relay(command_id, relay.TerminalConnected(), now)
        if waiting:
            log.info("agent_ledger_flushed_to_terminal", account_id=hs.account_id, commands=len(waiting))
        await self._flush()
        # the terminal's proofs stay here: Core neither needs nor records them
        await self._to_core(m.AccountOnline(self.agent_id, replace(hs, terminal_id="", token=""), now))

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
        reply(conn, DecodeFailure(code, why, "handshake").reply(self._clock.now_ms()))
        conn.refused = True

    async def _disconnected(self, conn: Connection) -> None:
        account = conn.account_id
        if account is None or self.connections.get(account) is not conn:
            return
        del self.connections[account]
        if self.registration.get(account) is m.RegistrationStatus.REJECTED:
            del self.registration[account]  # an invented account leaves nothing behind here either
        log.info("agent_account_disconnected", account_id=account, conn_id=conn.conn_id)
        self._for_core_later(m.AccountOffline(self.agent_id, account, self._clock.now_ms()))
        await self._flush()
