"""Answers about accounts from a store, for a person at the CLI: which terminals have reached Echo (each
account's last handshake and the verdict sent back), and what a configuration makes of an account's last
recorded handshake (the same evaluation Core applies at every handshake)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from echo import __version__
from echo.domain import messages as m
from echo.domain.config import Config
from echo.domain.ids import uuid7
from echo.domain.registration import evaluate
from echo.ports.store import Store


def as_dict(row: object) -> Any:
    """A store row (a dataclass) as a plain dict, for JSON."""
    if row is None:
        return None
    fields = getattr(row, "__dataclass_fields__", {})
    return {k: getattr(row, k) for k in fields}


@dataclass(frozen=True, slots=True)
class AccountSeen:
    account_id: str
    role: str
    agent_id: str
    handshake_at_ms: int
    verdict: str | None
    """The status of the last evaluation sent to it (ACCEPTED, WARNING, REJECTED), None if none."""
    problems: list[str]
    """That evaluation's global errors and warnings."""


async def accounts(store: Store) -> list[AccountSeen]:
    """Every account whose terminal ever completed a handshake, with its last verdict."""
    seen = []
    for row in await store.accounts():
        last = await store.evaluations(row.account_id, limit=1)
        problems: list[str] = []
        if last:
            for issues in (last[0].global_errors, last[0].global_warnings):
                problems += [str(i.get("code", i)) if isinstance(i, dict) else str(i) for i in _list(issues)]
        seen.append(
            AccountSeen(
                row.account_id,
                row.role,
                row.agent_id,
                row.updated_at_ms,
                last[0].status if last else None,
                problems,
            )
        )
    return seen


def _list(text: str) -> list[Any]:
    try:
        value = msgspec.json.decode(text or "[]")
    except msgspec.DecodeError:
        return [text]
    return value if isinstance(value, list) else [value]


async def evaluate_last_handshake(
    store: Store, config: Config, account_id: str, history: int
) -> dict[str, Any] | None:
    """What ``config`` makes of ``account_id``'s last recorded handshake, and the verdicts recorded for it
    (newest first, at most ``history``); None when no handshake of that account is recorded."""
    row = next((a for a in await store.accounts() if a.account_id == account_id), None)
    if row is None:
        return None
    hs = msgspec.json.decode(row.handshake, type=m.Handshake)
    now = int(time.time() * 1000)
    ev = evaluate(
        hs,
        config.protocol,
        config.symbols,
        agent_id=row.agent_id,
        core_version=__version__,
        evaluation_id=uuid7(now, os.urandom(10)),
        now_ms=now,
        configured=config.core.allows(hs.account_id, hs.role),
    )
    recorded = [as_dict(e) for e in await store.evaluations(account_id, limit=history)]
    return {"evaluation": msgspec.to_builtins(ev.result), "recorded": recorded}
