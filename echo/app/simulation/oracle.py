"""The simulator's verdict on one run: what the slaves really did against what the masters traded.

``summarize`` counts from every incarnation of each slave terminal and from the brokers (the real world):
``copied`` (a fill per trade and slave), ``duplicates`` (more orders opened by ``market_order`` for a trade
on a slave than one; a partial close's remainder is not one), ``lost`` (expected - copied - omitted) and
``open_after`` (slave positions still open). ``simulation_ok`` is the verdict: any of them non-zero, or a
run that does not settle, is a failure, which ``first_problem`` names by its first broken trade.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import trio

from echo.domain import messages as m
from echo.domain.ids import trade_id_from_comment

if TYPE_CHECKING:
    from echo.app.simulation.world import World


async def summarize(world: World, settled: bool, waiting_for: str | None) -> dict[str, Any]:
    """The summary of a finished (or stalled) run; ``waiting_for`` names the stage that did not finish."""
    opts = world.opts
    config = world.config.core
    slave_accounts = [s.account_id for s in world.slaves]
    masters = [ms.current for ms in world.masters]
    expected: list[tuple[str, str]] = [
        (trade_id, acc)
        for ms in masters
        for trade_id in ms.trades
        for acc in config.followers(ms.account_id, slave_accounts)
    ]
    # What every incarnation of each slave terminal answered: one fill is a copy; more tickets than one
    # for a (trade, account) is a duplicate. A terminal that lost its state file starts a fresh dict.
    result_tickets: dict[tuple[str, str], set[int]] = {}
    failures: dict[tuple[str, str], str] = {}
    remainders: set[tuple[str, int]] = set()
    for s in world.slaves:
        for ea in s.incarnations:
            for res in ea.results.values():
                key = (res.trade_id, s.account_id)
                if isinstance(res, m.ExecutionResult):
                    if res.success and res.ticket is not None:
                        result_tickets.setdefault(key, set()).add(res.ticket)
                    elif not res.success:
                        failures.setdefault(key, res.error_code.value)
                elif isinstance(res, m.CloseResult) and res.success and res.new_ticket is not None:
                    remainders.add((s.account_id, res.new_ticket))
    # What the brokers hold: every order a market_order opened (a partial close's remainder is not one).
    broker_tickets: dict[tuple[str, str], set[int]] = {}
    for s in world.slaves:
        for order in [*s.broker.history, *s.broker.open_orders()]:
            trade_id = trade_id_from_comment(order.comment)
            if trade_id is None or (s.account_id, order.ticket) in remainders:
                continue
            broker_tickets.setdefault((trade_id, s.account_id), set()).add(order.ticket)
    decisions = await world.store.decisions(limit=10_000_000)
    omitted_keys: dict[tuple[str, str], str] = {
        (d.trade_id, d.account_id): d.reason for d in decisions if d.decision == "omit"
    }
    for key, code in failures.items():
        if key not in result_tickets and key not in omitted_keys:
            omitted_keys[key] = f"broker:{code}"
    omit_reasons = Counter(omitted_keys.values())
    still_open = {
        (trade_id_from_comment(o.comment), s.account_id) for s in world.slaves for o in s.broker.open_orders()
    }
    problems: list[dict[str, Any]] = []
    copied = duplicates = 0
    for key in expected:
        tickets = result_tickets.get(key, set()) | broker_tickets.get(key, set())
        if key in result_tickets:
            copied += 1
        elif key not in omitted_keys:
            problems.append({"trade_id": key[0], "account": key[1], "what": "lost: never filled"})
        if len(tickets) > 1:
            duplicates += len(tickets) - 1
            problems.append(
                {
                    "trade_id": key[0],
                    "account": key[1],
                    "what": f"duplicate: {len(tickets)} orders opened, tickets {sorted(tickets)}",
                }
            )
    expected_keys = set(expected)
    for (unknown, acc), tickets in sorted(broker_tickets.items()):
        if (unknown, acc) not in expected_keys:
            duplicates += len(tickets)
            problems.append(
                {
                    "trade_id": unknown,
                    "account": acc,
                    "what": f"orders of an unknown trade {sorted(tickets)}",
                }
            )
    open_after = 0
    for s in world.slaves:
        for o in s.broker.open_orders():
            open_after += 1
            problems.append(
                {
                    "trade_id": trade_id_from_comment(o.comment),
                    "account": s.account_id,
                    "what": f"still open after the master closed: ticket {o.ticket} ({o.lots} lots)",
                }
            )
    stats: Counter[str] = Counter()
    for c in world.copiers:
        stats.update(c.core.stats)
    summary: dict[str, Any] = {
        "seed": opts.seed,
        "masters": opts.masters,
        "slaves": opts.slaves,
        "faults_spec": str(opts.faults),
        "settled": settled,
        "master_trades": sum(ms.trades_opened for ms in masters),
        "expected_copies": len(expected),
        "copied": copied,
        "omitted": len(omitted_keys),
        "omitted_reasons": dict(sorted(omit_reasons.items())),
        "closed": len(set(result_tickets) - still_open),
        "duplicates": duplicates,
        "lost": len(expected) - copied - len(omitted_keys),
        "open_after": open_after,
        "master_open_after": sum(len(ms.broker.open_orders()) for ms in world.masters),
        "partial_closes": sum(ms.partials for ms in masters),
        "modifications": sum(ms.modifies for ms in masters),
        "faults": world.counts.as_dict(),
        "crash_events": world.crash_events,
        "recognised": sum(ea.recognised for s in world.slaves for ea in s.incarnations),
        "master_resends": sum(ea.resends for ms in world.masters for ea in ms.incarnations),
        "core": {k: stats[k] for k in sorted(stats)},
        "agent": {
            k: sum(c.agent.stats.get(k, 0) for c in world.copiers)
            for k in sorted({k for c in world.copiers for k in c.agent.stats})
        },
        "agent_held_after": len(world.copiers[-1].agent.held) if world.copiers else 0,
        "protocol_errors": sum(c.agent.protocol_errors for c in world.copiers),
        "virtual_seconds": round(trio.current_time(), 3),
        "problems": problems[:20],
        "problem_count": len(problems),
    }
    if waiting_for is not None:
        core = world.copiers[-1].core
        summary["unsettled"] = {
            "waiting_for": waiting_for,
            "core_trade_count": len(core.trades),
            "core_trades": sorted(core.trades)[:20],
            "core_in_flight": core.in_flight,
            "master_pending": {ms.account_id: ms.current.pending for ms in world.masters},
            "masters_done": [ms.account_id for ms in world.masters if ms.done.is_set()],
        }
    return summary


def simulation_ok(summary: dict[str, Any]) -> bool:
    """The verdict: the run settled, and nothing was lost, duplicated or left open at a slave."""
    return bool(
        summary["settled"]
        and summary["lost"] == 0
        and summary["duplicates"] == 0
        and summary["open_after"] == 0
    )


def first_problem(summary: dict[str, Any]) -> str:
    """The first broken trade (or why the run did not settle) in one line, or ``none``."""
    if summary["problems"]:
        p = summary["problems"][0]
        return f"trade {p['trade_id']} on {p['account']}: {p['what']}"
    if not summary["settled"]:
        u = summary["unsettled"]
        return (
            f"did not settle: waiting for {u['waiting_for']}; Core still holds {u['core_trades'][:3]}, "
            f"{u['core_in_flight']} command(s) in flight; masters' unacked lines {u['master_pending']}"
        )
    return "none"


def summary_line(summary: dict[str, Any]) -> str:
    """One seed's outcome in one line, as a run of several seeds prints it."""
    f = summary["faults"]
    c = f["crashes"]
    return (
        f"seed {summary['seed']}: {'ok' if simulation_ok(summary) else 'FAILED'} "
        f"trades={summary['master_trades']} copied={summary['copied']}/{summary['expected_copies']} "
        f"omitted={summary['omitted']} lost={summary['lost']} duplicates={summary['duplicates']} "
        f"open_after={summary['open_after']} settled={summary['settled']} "
        f"virtual={summary['virtual_seconds']}s faults: drop={f['dropped']} dup={f['duplicated']} "
        f"reorder={f['reordered']} disconnect={f['disconnects']} "
        f"crash={c['copier']}/{c['slave']}/{c['master']}"
    )
