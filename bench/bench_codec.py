"""The Core <-> Agent codec on one ExecuteOrder (the message of every fan-out in split mode): the
protobuf message alone (build + serialize, parse) and the whole path a command takes (domain message ->
bytes in Core, bytes -> domain message in the Agent), in microseconds per message.

Prints JSON: the median of ``--rounds`` rounds of ``--n`` messages each, the generated code's backend
(``upb`` is protobuf's C implementation) and the wire size. Usage:
``python bench/bench_codec.py [--n 20000] [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf.internal import api_implementation

from echo.adapters.transport import grpc_convert as conv
from echo.adapters.transport.pb.echo.v1 import agent_pb2 as apb
from echo.adapters.transport.pb.echo.v1 import common_pb2 as cpb
from echo.adapters.transport.pb.echo.v1 import trade_pb2 as tpb
from echo.domain import messages as m
from echo.domain.types import Side

ORDER = m.ExecuteOrder(
    command_id="019aba5a-2020-7f41-92c4-bef4365ac2e5",
    trade_id="019aba5a-1ff8-7d3b-a4ea-07b39d1963fe",
    trace_id="e140a19ce1a2d94cc9cae6c506bd55c0",
    symbol="XAUUSD.m",
    side=Side.SELL,
    lot_size=0.37,
    magic_number=20251125,
    comment="echo:1ff87d3b",
    stop_loss=2385.5,
    take_profit=2420.25,
    master_price=2398.45,
    max_slippage_points=30.0,
    attempt=1,
)


def _build() -> tpb.ExecuteOrder:
    return tpb.ExecuteOrder(
        command_id=ORDER.command_id,
        trade_id=ORDER.trade_id,
        trace_id=ORDER.trace_id,
        symbol=ORDER.symbol,
        side=cpb.ORDER_SIDE_SELL,
        lot_size=ORDER.lot_size,
        magic_number=ORDER.magic_number,
        comment=ORDER.comment,
        stop_loss=ORDER.stop_loss,
        take_profit=ORDER.take_profit,
        master_price=ORDER.master_price,
        max_slippage_points=ORDER.max_slippage_points,
        attempt=ORDER.attempt,
    )


def _per_message_us(fn: Callable[[], object], n: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    order_bytes = _build().SerializeToString()
    envelope = m.ToAccount("51001", ORDER)
    wire = conv.core_message(envelope).SerializeToString()
    assert conv.core_message_from_pb(apb.CoreMessage.FromString(wire)) == envelope
    result = {
        "backend": api_implementation.Type(),
        "execute_order_bytes": len(order_bytes),
        "core_message_bytes": len(wire),
        "pb_build_serialize_us": _per_message_us(lambda: _build().SerializeToString(), args.n, args.rounds),
        "pb_parse_us": _per_message_us(lambda: tpb.ExecuteOrder.FromString(order_bytes), args.n, args.rounds),
        "domain_to_wire_us": _per_message_us(
            lambda: conv.core_message(envelope).SerializeToString(), args.n, args.rounds
        ),
        "wire_to_domain_us": _per_message_us(
            lambda: conv.core_message_from_pb(apb.CoreMessage.FromString(wire)), args.n, args.rounds
        ),
        "wire_check_us": _per_message_us(
            lambda: conv.wire_problem(wire, apb.CoreMessage), args.n, args.rounds
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
