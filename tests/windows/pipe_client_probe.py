"""Run by the Windows Python under Wine (``test_named_pipe``): a raw client of the Agent's named pipe
``argv[1]``. It sends a line that is not JSON, then one longer than ``argv[2]`` bytes, each followed by
reading the Agent's reply line, and prints the two replies as a JSON list."""

from __future__ import annotations

import json
import sys

import trio

from echo.adapters.pipe.winpipe import connect_pipe


async def reply(stream: trio.abc.Stream, pending: bytearray) -> str:
    while b"\n" not in pending:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise SystemExit("the Agent closed the pipe")
        pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line.decode()


async def main() -> None:
    limit = int(sys.argv[2])
    pending = bytearray()
    with trio.fail_after(30):
        stream = await connect_pipe(sys.argv[1])
        async with stream:
            await stream.send_all(b"this is not json\n")
            first = await reply(stream, pending)
            await stream.send_all(b'{"type":"' + b"x" * (limit + 100) + b'"}\n')
            second = await reply(stream, pending)
    print(json.dumps([json.loads(first), json.loads(second)]))


if __name__ == "__main__":
    trio.run(main)
