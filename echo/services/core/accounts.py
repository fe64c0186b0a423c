"""Accounts: a terminal coming online (its handshake evaluated, recorded and answered; an account that
moved to another Agent; work waiting for it), going offline, and every account evaluated again when the
rules change.

Ownership: an account is served by the one Agent that announced it. It moves to another Agent only while
it is offline at its owner; an announcement from another Agent while the owner serves it is refused (the
account stays). Messages from an account (its terminal's reports and intents) are taken only from its
owner (a command ack goes by the command it answers). A peer's timestamp more than ``MAX_CLOCK_SKEW_MS``
ahead of Core's clock is refused, so no report dated in the future can hold an account against the
reports that follow it."""

from __future__ import annotations

import structlog

from echo import __version__
from echo.domain import messages as m
from echo.domain.registration import Evaluation, evaluate
from echo.domain.types import Role
from echo.pipe.jsonenc import to_json
from echo.ports.store import AccountRow, EvaluationRow, SymbolEvaluationRow
from echo.services import instruments
from echo.services.core import positions
from echo.services.core.context import Context
from echo.services.core.state import Account
from echo.services.core.tx import Tx

log = structlog.get_logger("echo.core")

MAX_CLOCK_SKEW_MS = 30_000
"""How far ahead of Core's clock a peer's timestamp may be (clocks of different hosts drift)."""


def _often(n: int) -> bool:
    """Log the 1st, 2nd, 4th, 8th... of a repeated refusal: a flood costs a few lines, not one each."""
    return n & (n - 1) == 0


def from_the_future(ctx: Context, agent_id: str, at_ms: int, what: str) -> bool:
    """True (logged, counted) when a peer dates ``what`` further ahead of Core's clock than allowed."""
    now = ctx.now()
    if at_ms <= now + MAX_CLOCK_SKEW_MS:
        return False
    ctx.count("reports_from_the_future")
    if _often(ctx.stats["reports_from_the_future"]):
        log.warning(
            "core_report_refused",
            agent_id=agent_id,
            message=what,
            reason="dated ahead of Core's clock",
            reported_at_ms=at_ms,
            now_ms=now,
            max_skew_ms=MAX_CLOCK_SKEW_MS,
            refused=ctx.stats["reports_from_the_future"],
        )
    return True


def owned_by(ctx: Context, acc: Account, agent_id: str, what: str) -> bool:
    """True when ``agent_id`` serves ``acc``; a message about another Agent's account is refused (logged
    with the first of a run, counted)."""
    if acc.agent_id == agent_id:
        return True
    ctx.count("messages_not_from_owner")
    if _often(ctx.stats["messages_not_from_owner"]):
        log.warning(
            "core_message_refused",
            account_id=acc.account_id,
            agent_id=agent_id,
            owner=acc.agent_id,
            message=what,
            reason="the account is served by another Agent",
            refused=ctx.stats["messages_not_from_owner"],
        )
    return False


def evaluation(ctx: Context, hs: m.Handshake, agent_id: str) -> Evaluation:
    """Core's verdict on a handshake under the rules in force."""
    return evaluate(
        hs,
        ctx.protocol,
        ctx.catalog,
        agent_id=agent_id,
        core_version=__version__,
        evaluation_id=ctx.ids.uuid7(),
        now_ms=ctx.now(),
        configured=ctx.config.allows(hs.account_id, hs.role),
    )


def account_of(
    hs: m.Handshake, agent_id: str, ev: Evaluation, *, online: bool, reported_at_ms: int
) -> Account:
    """An account as its handshake and Core's verdict on it describe it."""
    return Account(
        hs.account_id,
        hs.role,
        agent_id,
        online,
        hs,
        ev.symbols,
        registration=ev.status,
        rejected_symbols=ev.rejected_symbols,
        reported_at_ms=reported_at_ms,
    )


def on_online(ctx: Context, agent_id: str, msg: m.AccountOnline, tx: Tx) -> None:
    st = ctx.state
    hs = msg.handshake
    prev = st.accounts.get(hs.account_id)
    if from_the_future(ctx, agent_id, msg.at_ms, "AccountOnline"):
        return
    if prev is not None and prev.online and prev.agent_id != agent_id:
        # Another Agent announces an account its owner still serves: refused, the account stays. The
        # announcement is kept: when the owner lets the account go (the terminal really moved, and its
        # old Agent noticed after the new one), it is taken up.
        st.claims[hs.account_id] = (agent_id, msg)
        ctx.count("account_claims_refused")
        log.warning(
            "core_account_claim_refused",
            account_id=hs.account_id,
            agent_id=agent_id,
            owner=prev.agent_id,
            reason="the account is online at another Agent",
        )
        return
    if prev is not None and msg.at_ms < prev.reported_at_ms:
        # a report older than the one in force (reordered across reconnects): hard-replace only forward
        ctx.count("stale_handshakes")
        log.warning(
            "core_handshake_stale",
            account_id=hs.account_id,
            reported_at_ms=msg.at_ms,
            in_force_since_ms=prev.reported_at_ms,
        )
        return
    ev = evaluation(ctx, hs, agent_id)
    if prev is None and not ctx.config.allows(hs.account_id, hs.role):
        # An account the configuration does not list: refused, and nothing of it is kept (no accounts
        # row, no evaluation rows, no state), so invented ids cost nothing.
        ctx.count("handshakes_not_configured")
        log.error(
            "core_handshake_refused",
            account_id=hs.account_id,
            role=hs.role.value,
            agent_id=agent_id,
            reason="not in core.follow",
            evaluation_id=ev.result.evaluation_id,
        )
        tx.direct.append((agent_id, m.ToAccount(hs.account_id, ev.result)))
        return
    st.claims.pop(hs.account_id, None)
    acc = account_of(hs, agent_id, ev, online=True, reported_at_ms=msg.at_ms)
    if prev is not None:
        acc.quotes, acc.snapshot = prev.quotes, prev.snapshot
        acc.tick_values, acc.tick_values_at_ms = prev.tick_values, prev.tick_values_at_ms
    st.accounts[hs.account_id] = acc
    tx.batch.accounts.append(AccountRow(hs.account_id, hs.role.value, agent_id, to_json(hs), msg.at_ms))
    if prev is not None and prev.agent_id != agent_id:
        # The terminal now runs beside another Agent (it was offline at its owner): from here on only that
        # Agent gets its messages, and the old Agent's going offline no longer touches it.
        ctx.record(tx, "account_moved", account_id=hs.account_id, from_agent=prev.agent_id, to_agent=agent_id)
        reason = f"account {hs.account_id} moved to agent {agent_id}"
        for pend in st.pending.values():
            if pend.account_id == hs.account_id:
                tx.released.append(
                    (prev.agent_id, m.DropCommand(hs.account_id, pend.command.command_id, reason))
                )
    ctx.record(
        tx,
        "account_online",
        account_id=hs.account_id,
        agent_id=agent_id,
        role=hs.role.value,
        symbols={c: s.broker_symbol for c, s in ev.symbols.items()},
        rejected_symbols=ev.rejected_symbols,
        protocol_version=hs.protocol_version,
        client_semver=hs.client_semver,
        registration=ev.status.value,
        evaluation_id=ev.result.evaluation_id,
    )
    send_evaluation(ctx, acc, ev, tx)
    if acc.registration is m.RegistrationStatus.REJECTED:
        return  # nothing goes to this account until a handshake or a re-evaluation accepts it
    if hs.role is Role.SLAVE:
        positions.revive(ctx, hs.account_id, tx)


def on_offline(ctx: Context, agent_id: str, msg: m.AccountOffline, tx: Tx) -> None:
    st = ctx.state
    claim = st.claims.get(msg.account_id)
    if claim is not None and claim[0] == agent_id:
        del st.claims[msg.account_id]  # the Agent that claimed the account no longer has its terminal
    acc = st.accounts.get(msg.account_id)
    if acc is not None and acc.agent_id == agent_id:
        acc.online = False
        ctx.record(tx, "account_offline", account_id=msg.account_id, agent_id=agent_id)
        claim = st.claims.pop(msg.account_id, None)
        if claim is not None:
            on_online(ctx, claim[0], claim[1], tx)  # the terminal is at the other Agent now


def send_evaluation(ctx: Context, acc: Account, ev: Evaluation, tx: Tx) -> None:
    """The verdict goes to the terminal at once (same commit as the handshake) and is recorded."""
    r = ev.result
    tx.sends.append(m.ToAccount(acc.account_id, r))
    tx.batch.evaluations.append(
        EvaluationRow(
            r.evaluation_id,
            r.account_id,
            r.pipe_role.value,
            r.status.value,
            r.protocol_version,
            acc.handshake.client_semver,
            to_json(r.errors),
            to_json(r.warnings),
            r.evaluated_at_ms,
        )
    )
    tx.batch.symbol_evaluations.extend(
        SymbolEvaluationRow(
            r.evaluation_id,
            e.canonical_symbol,
            e.broker_symbol,
            e.status.value,
            to_json(e.warnings),
            to_json(e.errors),
            e.spec_age_ms,
            e.evaluated_at_ms,
        )
        for e in r.symbols
    )
    issues = [i.code for i in (*r.errors, *r.warnings)]
    issues += [f"{e.broker_symbol}:{i.code}" for e in r.symbols for i in (*e.errors, *e.warnings)]
    ctx.count(f"handshake_{r.status.value.lower()}")
    instruments.handshake(acc.account_id, r.status.value, ctx.now() - acc.reported_at_ms)
    level = {
        m.RegistrationStatus.ACCEPTED: log.info,
        m.RegistrationStatus.WARNING: log.warning,
        m.RegistrationStatus.REJECTED: log.error,
    }[r.status]
    level(
        "core_handshake_evaluated",
        account_id=acc.account_id,
        status=r.status.value,
        evaluation_id=r.evaluation_id,
        protocol_version=r.protocol_version,
        client_semver=acc.handshake.client_semver,
        issues=issues,
    )


def reevaluate(ctx: Context, acc: Account, tx: Tx) -> None:
    """The account judged again from its last handshake under new rules; online terminals hear the new
    verdict, and an account no longer REJECTED gets what was held for it."""
    ev = evaluation(ctx, acc.handshake, acc.agent_id)
    before = acc.registration
    acc.symbols, acc.registration, acc.rejected_symbols = ev.symbols, ev.status, ev.rejected_symbols
    if acc.online:
        send_evaluation(ctx, acc, ev, tx)
    if before is m.RegistrationStatus.REJECTED and ev.status is not m.RegistrationStatus.REJECTED:
        positions.pump_account(ctx, acc.account_id, tx)
