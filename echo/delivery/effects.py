"""What the delivery machines share: their timing (``Settings``, built from configuration or the wire
in one place, ``Settings.of``), the effects they return for the caller to carry out, and the ``Timeout``
input both take when a retry timer fires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias


class Timing(Protocol):
    """Anything that carries delivery timing: the ``[delivery]`` configuration, the wire's
    ``delivery_config``."""

    @property
    def ack_timeout_ms(self) -> int: ...
    @property
    def retry_backoff_ms(self) -> int: ...
    @property
    def max_retries(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Settings:
    """Delivery timing (``[delivery]`` in the configuration; dynamic). Built with ``Settings.of``."""

    ack_timeout_ms: int = 1000
    retry_backoff_ms: int = 500
    max_retries: int = 100
    max_backoff_ms: int = 30_000

    def __post_init__(self) -> None:
        if self.max_retries < 1 or self.ack_timeout_ms < 1 or self.retry_backoff_ms < 0:
            raise ValueError(f"invalid delivery settings: {self}")

    @classmethod
    def of(cls, timing: Timing) -> Settings:
        """The machines' timing from the configuration or from the wire: the one translation."""
        return cls(timing.ack_timeout_ms, timing.retry_backoff_ms, timing.max_retries)

    def retry_delay_ms(self, attempt: int) -> int:
        """Wait after send number ``attempt`` before the next one: the ack timeout plus an exponential
        backoff (``retry_backoff_ms * 2**(attempt-1)``, capped)."""
        backoff = min(self.retry_backoff_ms * (1 << min(max(attempt - 1, 0), 20)), self.max_backoff_ms)
        return self.ack_timeout_ms + backoff


# ------------------------------------------------------------------------------------------------ effects


@dataclass(frozen=True, slots=True)
class Persist:
    """Record the new state (the journal row) before any send that follows."""


@dataclass(frozen=True, slots=True)
class Send:
    attempt: int


@dataclass(frozen=True, slots=True)
class RetryAt:
    at_ms: int


@dataclass(frozen=True, slots=True)
class CancelRetry:
    pass


@dataclass(frozen=True, slots=True)
class Done:
    """The lifecycle ended: ``ok`` for a confirmed success (or an acknowledged intent)."""

    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a person must look at (the lifecycle goes on)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ignore:
    """A legitimate but stale input (a duplicate or late reply): nothing to do, worth a debug line."""

    reason: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """An input that is impossible in this state: a precise description for the log."""

    state: str
    input: str
    reason: str


Effect: TypeAlias = Persist | Send | RetryAt | CancelRetry | Done | Alert | Ignore | Invalid


@dataclass(frozen=True, slots=True)
class Timeout:
    """The retry timer fired."""
