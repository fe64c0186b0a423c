"""The messages of the copier (RFC-001 section 4 and the later seeds), as frozen dataclasses.

These are the payloads of the EA wire protocol (``conformance/PROTOCOL.md``) and the units carried by
the Core <-> Agent transport. Units: prices are in the symbol's quote currency (never points); lots are
lots; ``*_points`` fields are in MT4 points of the symbol they name; times are Unix milliseconds (UTC).
Every trade message carries the ``trace_id`` born at the master.

Each class validates itself on construction (``__post_init__``); decoders surface those errors as
``invalid value`` replies.

One module a family: ``handshake``, ``master`` (master -> Core), ``commands`` (Core -> slave),
``results`` (slave -> Core), ``state`` (account and market state), ``replies`` (Agent -> EA), ``transport``
(Core <-> Agent units). Every name is re-exported here, with the domain types the fields carry:
``from echo.domain import messages as m``, then ``m.X``.
"""

from __future__ import annotations

from echo.domain.errors import ErrorCode
from echo.domain.messages.commands import (
    CloseOrder,
    Command,
    ExecuteOrder,
    ModifyOrder,
)
from echo.domain.messages.handshake import (
    PROTOCOL_VERSION,
    Capabilities,
    Handshake,
)
from echo.domain.messages.master import (
    AckStatus,
    TradeClose,
    TradeIntent,
    TradeIntentAck,
    TradeModify,
)
from echo.domain.messages.replies import (
    DeliveryConfig,
    ErrorReply,
    RegistrationIssue,
    RegistrationStatus,
    SymbolRegistrationEntry,
    SymbolRegistrationResult,
)
from echo.domain.messages.results import (
    CloseResult,
    DeliveryStatus,
    ExecutionResult,
    ModifyResult,
    PipeDeliveryAck,
    Result,
)
from echo.domain.messages.state import (
    ClosedPosition,
    CloseReason,
    Heartbeat,
    Position,
    Quote,
    Quotes,
    StateSnapshot,
    TickValue,
)
from echo.domain.messages.transport import (
    AccountOffline,
    AccountOnline,
    AckResult,
    AckStage,
    AgentToCore,
    CommandAck,
    CoreToAgent,
    DeliveryHeartbeat,
    DropCommand,
    FromAccount,
    FromEA,
    ToAccount,
    ToEA,
)
from echo.domain.types import Role, Side, SymbolSpec

__all__ = [
    "PROTOCOL_VERSION",
    "AccountOffline",
    "AccountOnline",
    "AckResult",
    "AckStage",
    "AckStatus",
    "AgentToCore",
    "Capabilities",
    "CloseOrder",
    "CloseReason",
    "CloseResult",
    "ClosedPosition",
    "Command",
    "CommandAck",
    "CoreToAgent",
    "DeliveryConfig",
    "DeliveryHeartbeat",
    "DeliveryStatus",
    "DropCommand",
    "ErrorCode",
    "ErrorReply",
    "ExecuteOrder",
    "ExecutionResult",
    "FromAccount",
    "FromEA",
    "Handshake",
    "Heartbeat",
    "ModifyOrder",
    "ModifyResult",
    "PipeDeliveryAck",
    "Position",
    "Quote",
    "Quotes",
    "RegistrationIssue",
    "RegistrationStatus",
    "Result",
    "Role",
    "Side",
    "StateSnapshot",
    "SymbolRegistrationEntry",
    "SymbolRegistrationResult",
    "SymbolSpec",
    "TickValue",
    "ToAccount",
    "ToEA",
    "TradeClose",
    "TradeIntent",
    "TradeIntentAck",
    "TradeModify",
]
