"""What the Agent tells an EA beyond acks: the symbol registration verdict, delivery settings, errors."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from echo.domain.messages._checks import check_numbers
from echo.domain.types import Role


class RegistrationStatus(enum.Enum):
    ACCEPTED = "ACCEPTED"
    WARNING = "WARNING"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class RegistrationIssue:
    code: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_numbers(self)


@dataclass(frozen=True, slots=True)
class SymbolRegistrationEntry:
    canonical_symbol: str
    broker_symbol: str
    status: RegistrationStatus
    warnings: list[RegistrationIssue] = field(default_factory=list)
    errors: list[RegistrationIssue] = field(default_factory=list)
    spec_age_ms: int = 0
    evaluated_at_ms: int = 0

    def __post_init__(self) -> None:
        check_numbers(self)


@dataclass(frozen=True, slots=True)
class SymbolRegistrationResult:
    account_id: str
    pipe_role: Role
    protocol_version: int
    agent_id: str
    core_version: str
    status: RegistrationStatus
    evaluated_at_ms: int
    evaluation_id: str
    errors: list[RegistrationIssue] = field(default_factory=list)
    warnings: list[RegistrationIssue] = field(default_factory=list)
    symbols: list[SymbolRegistrationEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_numbers(self)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    ack_timeout_ms: int
    retry_backoff_ms: int
    max_retries: int
    heartbeat_interval_ms: int

    def __post_init__(self) -> None:
        check_numbers(self)
        for name in ("ack_timeout_ms", "retry_backoff_ms", "max_retries", "heartbeat_interval_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The ``error`` message: names the problem with a line that could not be accepted."""

    code: str
    message: str
    ref_type: str | None = None

    def __post_init__(self) -> None:
        check_numbers(self)
