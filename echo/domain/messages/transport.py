"""The units Core and Agent exchange over the transport, and the unions of what an EA sends and receives."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from echo.domain.messages.commands import CloseOrder, ExecuteOrder, ModifyOrder
from echo.domain.messages.handshake import Handshake
from echo.domain.messages.master import TradeClose, TradeIntent, TradeIntentAck, TradeModify
from echo.domain.messages.replies import DeliveryConfig, SymbolRegistrationResult
from echo.domain.messages.results import CloseResult, ExecutionResult, ModifyResult, PipeDeliveryAck
from echo.domain.messages.state import Quotes, StateSnapshot

FromEA = (
    TradeIntent
    | TradeClose
    | TradeModify
    | ExecutionResult
    | CloseResult
    | ModifyResult
    | Quotes
    | StateSnapshot
    | PipeDeliveryAck
)
ToEA = ExecuteOrder | CloseOrder | ModifyOrder | TradeIntentAck | SymbolRegistrationResult | DeliveryConfig


@dataclass(frozen=True, slots=True)
class AccountOnline:
    """Agent -> Core: an EA completed its handshake on this agent."""

    agent_id: str
    handshake: Handshake
    at_ms: int


@dataclass(frozen=True, slots=True)
class AccountOffline:
    agent_id: str
    account_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class FromAccount:
    """Agent -> Core: a message an EA sent, tagged with the account of its connection."""

    account_id: str
    message: FromEA
    received_ms: int
    traceparent: str = ""
    """The W3C traceparent of the Agent's span for this message ("" when traces are off)."""


class AckStage(enum.Enum):
    """How far the Agent got a command (seed 000 section 7; CORE_ACCEPTED and EA_CONFIRMED are Core's)."""

    AGENT_BUFFERED = "AGENT_BUFFERED"
    PIPE_DELIVERED = "PIPE_DELIVERED"


class AckResult(enum.Enum):
    PENDING = "PENDING"
    OK = "OK"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class CommandAck:
    """Agent -> Core: a command reached a stage on the Agent's hop.

    ``AGENT_BUFFERED/PENDING``: the terminal is offline, the command waits in the Agent's ledger.
    ``AGENT_BUFFERED/FAILED``: the Agent could not get it acknowledged by the terminal and let go.
    ``PIPE_DELIVERED/OK``: the terminal acknowledged the line. ``PIPE_DELIVERED/FAILED``: it refused it."""

    account_id: str
    command_id: str
    stage: AckStage
    result: AckResult
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DropCommand:
    """Core -> Agent: Core gave up on this command; the Agent stops trying to deliver it."""

    account_id: str
    command_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ToAccount:
    """Core -> Agent: write ``message`` to the connection of ``account_id``."""

    account_id: str
    message: ToEA
    traceparent: str = ""
    """The W3C traceparent of Core's span that sent this message ("" when traces are off)."""


@dataclass(frozen=True, slots=True)
class DeliveryHeartbeat:
    """Core -> Agent: the delivery settings now in force (sent when they change, and to every Agent that
    connects); the Agent passes them to its terminals as ``delivery_config``."""

    config: DeliveryConfig


AgentToCore = AccountOnline | AccountOffline | FromAccount | CommandAck
CoreToAgent = ToAccount | DeliveryHeartbeat | DropCommand
