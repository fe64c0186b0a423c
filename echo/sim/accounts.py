"""The account numbers of simulated terminals, and how a number of trades is shared among the masters.

The demo, the simulator, the benchmarks and the tests number their terminals alike: masters 9001, 9002...,
slaves 51001, 51002...
"""

from __future__ import annotations


def master_ids(n: int) -> list[str]:
    """The first ``n`` master accounts: ``9001``, ``9002``..."""
    return [f"{9000 + i}" for i in range(1, n + 1)]


def slave_ids(n: int) -> list[str]:
    """The first ``n`` slave accounts: ``51001``, ``51002``..."""
    return [f"{51000 + i}" for i in range(1, n + 1)]


def trades_per_master(trades: int, masters: int) -> list[int]:
    """``trades`` shared among ``masters`` as evenly as can be, the first masters taking one more."""
    return [trades // masters + (1 if i < trades % masters else 0) for i in range(masters)]
