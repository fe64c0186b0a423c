"""Handshake evaluation (RFC-004b symbol reports, RFC-005a versioned handshake and feedback), pure.

Core evaluates every handshake against the protocol policy (version range, blocked versions, required
features) and the symbol catalog (canonical symbols, ``unknown_action``) and answers the terminal with a
``symbol_registration_result``: a status per symbol and a global status, the worst of all. REJECTED
(globally) blocks every command to the account; a REJECTED symbol is never traded there; WARNING lets
copying go on with the status recorded on each receipt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from echo.domain import messages as m
from echo.domain.errors import ConfigError
from echo.domain.types import Role, SymbolSpec, normalize_symbol

_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")

ISSUE_PROTOCOL_VERSION_UNSUPPORTED = "PROTOCOL_VERSION_UNSUPPORTED"
ISSUE_PROTOCOL_VERSION_LEGACY = "PROTOCOL_VERSION_LEGACY"
ISSUE_FEATURE_MISSING = "FEATURE_MISSING"
ISSUE_CLIENT_SEMVER_INVALID = "CLIENT_SEMVER_INVALID"
ISSUE_DUPLICATE_CANONICAL = "DUPLICATE_CANONICAL"
ISSUE_CANONICAL_NOT_ALLOWED = "CANONICAL_NOT_ALLOWED"
ISSUE_ACCOUNT_NOT_CONFIGURED = "ACCOUNT_NOT_CONFIGURED"
ISSUE_POSITION_MODE_NETTING = "POSITION_MODE_NETTING"
FEATURE_NETTING = "position_mode/netting"
"""The capability an MT5 EA declares on a netting account (``position_mode/hedging`` on a hedging one)."""


@dataclass(frozen=True, slots=True)
class ProtocolPolicy:
    """``[protocol]``: which EA protocol versions Core accepts, and the features it expects."""

    min_version: int = 1
    max_version: int = m.PROTOCOL_VERSION
    blocked_versions: tuple[int, ...] = ()
    """Versions refused even inside [min_version, max_version] (e.g. a release with a known bug)."""
    required_features: tuple[str, ...] = ()
    """Capabilities every EA should declare; one missing is a WARNING (the account keeps working)."""

    def __post_init__(self) -> None:
        for name in ("blocked_versions", "required_features"):
            if not isinstance(getattr(self, name), list | tuple):
                raise ConfigError(f"protocol.{name} must be a list, got {getattr(self, name)!r}")
        object.__setattr__(self, "blocked_versions", tuple(self.blocked_versions))
        object.__setattr__(self, "required_features", tuple(self.required_features))
        for name in ("min_version", "max_version"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= m.PROTOCOL_VERSION:
                raise ConfigError(f"protocol.{name} must be 1..{m.PROTOCOL_VERSION}, got {v!r}")
        if self.min_version > self.max_version:
            raise ConfigError(
                f"protocol.min_version {self.min_version} is above max_version {self.max_version}"
            )
        for v in self.blocked_versions:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"protocol.blocked_versions must be versions >= 1, got {v!r}")
        if all(v in self.blocked_versions for v in range(self.min_version, self.max_version + 1)):
            raise ConfigError("protocol.blocked_versions leaves no version to accept")
        for f in self.required_features:
            if not isinstance(f, str) or not f:
                raise ConfigError(f"protocol.required_features must be non-empty strings, got {f!r}")

    def accepts(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version and version not in self.blocked_versions


@dataclass(frozen=True, slots=True)
class SymbolCatalog:
    """``[symbols]``: the canonical symbols Echo copies. Empty: every symbol is allowed."""

    canonical: frozenset[str] = frozenset()
    unknown_action: Literal["warn", "reject"] = "warn"
    """A reported symbol outside the catalog: ``warn`` (usable, flagged) or ``reject`` (never traded)."""

    def __post_init__(self) -> None:
        if not isinstance(self.canonical, list | tuple | set | frozenset):
            raise ConfigError(f"symbols.canonical must be a list of symbols, got {self.canonical!r}")
        names = []
        for s in self.canonical:
            if not isinstance(s, str) or not s.strip():
                raise ConfigError(f"symbols.canonical must be symbol names, got {s!r}")
            names.append(normalize_symbol(s))
        object.__setattr__(self, "canonical", frozenset(names))
        if self.unknown_action not in ("warn", "reject"):
            raise ConfigError(f"symbols.unknown_action must be warn or reject, got {self.unknown_action!r}")

    def allows(self, canonical: str) -> bool:
        return not self.canonical or canonical in self.canonical


@dataclass(frozen=True, slots=True)
class Evaluation:
    result: m.SymbolRegistrationResult
    symbols: dict[str, SymbolSpec] = field(default_factory=dict)
    """canonical -> spec for every symbol the account may trade (ACCEPTED or WARNING)."""
    rejected_symbols: dict[str, str] = field(default_factory=dict)
    """canonical -> why it may not be traded."""

    @property
    def status(self) -> m.RegistrationStatus:
        return self.result.status


_RANK = {m.RegistrationStatus.ACCEPTED: 0, m.RegistrationStatus.WARNING: 1, m.RegistrationStatus.REJECTED: 2}


def worst(statuses: Iterable[m.RegistrationStatus]) -> m.RegistrationStatus:
    return max(statuses, key=_RANK.__getitem__, default=m.RegistrationStatus.ACCEPTED)


def _issue(code: str, message: str, **metadata: str) -> m.RegistrationIssue:
    return m.RegistrationIssue(code, message, dict(metadata))


def evaluate(
    hs: m.Handshake,
    protocol: ProtocolPolicy,
    catalog: SymbolCatalog,
    *,
    agent_id: str,
    core_version: str,
    evaluation_id: str,
    now_ms: int,
    configured: bool = True,
) -> Evaluation:
    """Core's verdict on one handshake. Slaves are judged on their ``symbols`` (with specs), masters on
    the canonical targets of their ``symbol_mappings``. ``configured`` False: the configuration names its
    accounts and not this one in this role (``CoreConfig.allows``), which REJECTS it."""
    errors: list[m.RegistrationIssue] = []
    warnings: list[m.RegistrationIssue] = []
    if not configured:
        errors.append(
            _issue(
                ISSUE_ACCOUNT_NOT_CONFIGURED,
                f"account {hs.account_id} is not a {hs.role.value} in core.follow, which lists the accounts "
                "this copier serves",
                role=hs.role.value,
            )
        )
    if FEATURE_NETTING in hs.capabilities.features:
        errors.append(
            _issue(
                ISSUE_POSITION_MODE_NETTING,
                f"account {hs.account_id} is a netting account: Echo copies every trade as a position of its "
                "own, which needs a hedging account; open a hedging account for copying",
                position_mode="netting",
            )
        )
    version = hs.protocol_version
    if not protocol.accepts(version):
        why = "blocked" if version in protocol.blocked_versions else "outside the accepted range"
        errors.append(
            _issue(
                ISSUE_PROTOCOL_VERSION_UNSUPPORTED,
                f"protocol_version {version} is {why} ({protocol.min_version}..{protocol.max_version}"
                + (f", blocked {list(protocol.blocked_versions)}" if protocol.blocked_versions else "")
                + "); update the EA",
                protocol_version=str(version),
            )
        )
    elif version < m.PROTOCOL_VERSION:
        warnings.append(
            _issue(
                ISSUE_PROTOCOL_VERSION_LEGACY,
                f"protocol_version {version} is older than {m.PROTOCOL_VERSION}; please update the EA",
                protocol_version=str(version),
            )
        )
    if hs.client_semver and not _SEMVER.match(hs.client_semver):
        warnings.append(
            _issue(
                ISSUE_CLIENT_SEMVER_INVALID,
                f"client_semver {hs.client_semver!r} is not MAJOR.MINOR.PATCH",
                client_semver=hs.client_semver[:40],
            )
        )
    declared = set(hs.capabilities.features)
    missing = [f for f in protocol.required_features if f not in declared]
    if missing:
        warnings.append(
            _issue(
                ISSUE_FEATURE_MISSING,
                f"required features not declared: {', '.join(missing)}",
                features=",".join(missing),
            )
        )

    reported = (
        [(normalize_symbol(s.canonical_symbol or s.broker_symbol), s.broker_symbol, s) for s in hs.symbols]
        if hs.role is Role.SLAVE
        else [(normalize_symbol(c), b, None) for b, c in sorted(hs.symbol_mappings.items())]
    )
    by_canonical: dict[str, list[str]] = {}
    for canonical, broker, _ in reported:
        by_canonical.setdefault(canonical, []).append(broker)
    duplicates = {c: b for c, b in by_canonical.items() if len(b) > 1} if hs.role is Role.SLAVE else {}
    for canonical, brokers in sorted(duplicates.items()):
        errors.append(
            _issue(
                ISSUE_DUPLICATE_CANONICAL,
                f"{' and '.join(brokers)} all normalize to {canonical}: the whole symbol report is refused; "
                "report each canonical symbol once",
                canonical_symbol=canonical,
            )
        )

    entries: list[m.SymbolRegistrationEntry] = []
    usable: dict[str, SymbolSpec] = {}
    rejected: dict[str, str] = {}
    for canonical, broker, spec in reported:
        entry_errors: list[m.RegistrationIssue] = []
        entry_warnings: list[m.RegistrationIssue] = []
        if canonical in duplicates:
            entry_errors.append(
                _issue(
                    ISSUE_DUPLICATE_CANONICAL,
                    f"{canonical} is reported more than once",
                    canonical_symbol=canonical,
                )
            )
        if not catalog.allows(canonical):
            issue = _issue(
                ISSUE_CANONICAL_NOT_ALLOWED,
                f"{canonical} is not in the symbol catalog"
                + ("; it is not traded on this account" if catalog.unknown_action == "reject" else ""),
                canonical_symbol=canonical,
            )
            (entry_errors if catalog.unknown_action == "reject" else entry_warnings).append(issue)
        status = (
            m.RegistrationStatus.REJECTED
            if entry_errors
            else m.RegistrationStatus.WARNING
            if entry_warnings
            else m.RegistrationStatus.ACCEPTED
        )
        entries.append(
            m.SymbolRegistrationEntry(
                canonical, broker, status, entry_warnings, entry_errors, evaluated_at_ms=now_ms
            )
        )
        if status is m.RegistrationStatus.REJECTED:
            rejected[canonical] = "; ".join(i.message for i in entry_errors)
        elif spec is not None:
            usable[canonical] = spec

    status = worst(
        [
            m.RegistrationStatus.REJECTED if errors else m.RegistrationStatus.ACCEPTED,
            m.RegistrationStatus.WARNING if warnings else m.RegistrationStatus.ACCEPTED,
            *(
                # a rejected symbol is that symbol's problem; the account itself stays usable
                m.RegistrationStatus.WARNING if e.status is m.RegistrationStatus.REJECTED else e.status
                for e in entries
            ),
        ]
    )
    result = m.SymbolRegistrationResult(
        hs.account_id,
        hs.role,
        version,
        agent_id,
        core_version,
        status,
        now_ms,
        evaluation_id,
        errors=errors,
        warnings=warnings,
        symbols=entries,
    )
    if status is m.RegistrationStatus.REJECTED:
        usable = {}
    return Evaluation(result, usable, rejected)
