"""The Agent's command book: which commands it holds for its terminals, fed through the relay rules
(``echo.delivery.relay``), with the ledger writes and the acks to Core those rules call for collected
until the shell flushes them. Synchronous: the clock, the timers and the terminal writes come in from
outside."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from echo.delivery import relay
from echo.domain import messages as m
from echo.pipe.codec import AGENT_TO_EA, decode_line, encode
from echo.ports.ledger import AckLedger, LedgerEntry, LedgerError
from echo.services import instruments

log = structlog.get_logger("echo.agent")

Command = m.ExecuteOrder | m.CloseOrder | m.ModifyOrder


@dataclass(eq=False)
class Held:
    """A command in the ack ledger."""

    account_id: str
    command: Command
    line: bytes
    state: relay.Relay
    line_ms: int = -1
    """When ``line`` was encoded from ``command`` as it is now (-1: not since): a write then and with the
    same attempt is that line, not a second encoding."""


class Timers(Protocol):
    """Wakes for command ids (``echo.services.timers.DueTimers``)."""

    def at(self, at_ms: int, key: str) -> None: ...

    def discard(self, key: str) -> None: ...


Write = Callable[[str, m.ToEA, int, bytes | None], str | None]
"""Queue a message (already encoded, or None) on an account's connection; returns why it could not be
(``BUSY``: no room yet), or None."""

BUSY = "terminal busy"
"""Why a command was not queued: the terminal's outbox has no room for commands (it still reads)."""


def count(stats: dict[str, int], key: str, n: int = 1) -> None:
    stats[key] = stats.get(key, 0) + n


class CommandBook:
    def __init__(
        self,
        ledger: AckLedger,
        timers: Timers,
        write: Write,
        settings: Callable[[], relay.RelaySettings],
        stats: dict[str, int],
    ) -> None:
        self._ledger = ledger
        self._timers = timers
        self._write = write
        self._settings = settings
        self._stats = stats
        self.held: dict[str, Held] = {}
        """command_id -> the command the Agent is getting into its terminal (arrival order)."""
        self.settled: dict[str, Held] = {}
        """command_id -> a command whose part at the Agent is over for now (acknowledged, refused, or its
        writes used up), kept until Core is done with it so that a later send is numbered past its last
        write (``relay.RelayStatus.IDLE``)."""
        self._puts: dict[str, LedgerEntry] = {}
        self._deletes: set[str] = set()
        self.acks: list[m.CommandAck] = []
        """Acks for Core, sent by the shell at its next flush."""

    def find(self, command_id: str) -> Held | None:
        return self.held.get(command_id) or self.settled.get(command_id)

    def load(self) -> None:
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
        self.flush_ledger()
        if self.held:
            log.info("agent_ledger_loaded", held=len(self.held))

    def relay(self, command_id: str, event: relay.RelayInput, now_ms: int) -> None:
        """Feed one input to a held command's rules and carry out the effects (ledger writes and acks to
        Core are collected; the shell's flush sends them)."""
        held = self.find(command_id)
        state, effects = relay.relay_transition(held.state if held else None, event, now_ms, self._settings())
        if held is None:
            return  # only Arrived creates an entry, and arrived() builds it first
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
                self.acks.append(
                    m.CommandAck(
                        held.account_id,
                        command_id,
                        m.AckStage(effect.stage),
                        m.AckResult(effect.result),
                        effect.reason,
                    )
                )
                if effect.result != "PENDING" or effect.stage != "AGENT_BUFFERED":
                    count(self._stats, f"ack_{effect.stage.lower()}_{effect.result.lower()}")
                    instruments.PIPE_RETRIES.add(1, {"stage": effect.stage, "result": effect.result})
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
                    count(self._stats, "rewrites")
                    instruments.PIPE_REWRITES.add(1, {"account": held.account_id})
                    log.info(
                        "agent_command_rewritten",
                        command_id=command_id,
                        account_id=held.account_id,
                        attempt=effect.attempt,
                    )
                command = held.command
                line = held.line if held.line_ms == now_ms else None
                if command.attempt != effect.attempt:  # a copy only when the number changes (15 us each)
                    command, line = replace(command, attempt=effect.attempt), None
                reason = self._write(held.account_id, command, now_ms, line)
                if reason == BUSY:
                    self.relay(command_id, relay.Busy(), now_ms)
                    return
                if reason is not None:
                    self.relay(command_id, relay.WriteFailed(reason), now_ms)
                    return

    def arrived(self, account_id: str, command: Command, connected: bool, now_ms: int) -> None:
        """Core sent a command (again): hold it if it is new, then let the rules decide what to write."""
        held = self.find(command.command_id)
        if held is None:
            held = Held(account_id, command, encode(command, now_ms), relay.Relay(now_ms), now_ms)
            self.held[command.command_id] = held
        elif held.account_id != account_id:
            log.error(
                "agent_command_account_mismatch",
                command_id=command.command_id,
                held_for=held.account_id,
                sent_for=account_id,
            )
            return
        if held.command is not command:
            held.command, held.line_ms = command, -1
        self.relay(command.command_id, relay.Arrived(connected, command.attempt), now_ms)

    def flush_ledger(self) -> None:
        """The collected ledger changes in one transaction."""
        if not self._puts and not self._deletes:
            return
        puts, deletes = list(self._puts.values()), list(self._deletes)
        self._puts, self._deletes = {}, set()
        try:
            self._ledger.apply(puts, deletes)
        except LedgerError as exc:
            # The ledger is a buffer: Core's journal re-sends whatever has no result. Delivery goes on.
            count(self._stats, "ledger_errors")
            log.error("agent_ledger_write_failed", error=str(exc), puts=len(puts), deletes=len(deletes))

    def take_acks(self) -> list[m.CommandAck]:
        acks, self.acks = self.acks, []
        return acks
