"""One EA connection's writer (``echo.services.agent.connection.write_lines``) on a mock clock: a terminal
that reads, however slowly, is never cut off; one that reads nothing for ``stall_s`` while a write waits
is. A lockstep stream blocks a write until the peer reads, as a full socket does."""

from __future__ import annotations

import trio
import trio.testing

from echo.services.agent.connection import Connection, drain, reply, write_lines


async def _run_writer(
    reader_pause_s: float | None, lines: int, stall_s: float = 5.0
) -> tuple[Connection, list[str], bytes]:
    client, server = trio.testing.lockstep_stream_pair()
    send, recv = trio.open_memory_channel[tuple[bytes, str]](lines)
    conn = Connection(1, server, send)
    written: list[str] = []
    got = bytearray()

    async def on_written(_conn: Connection, command_id: str) -> None:
        written.append(command_id)

    for i in range(lines):
        send.send_nowait((f"line {i}\n".encode(), f"c{i}"))
    send.close()
    async with trio.open_nursery() as nursery:
        if reader_pause_s is not None:

            async def reader() -> None:
                while True:
                    await trio.sleep(reader_pause_s)
                    chunk = await client.receive_some(4096)
                    if not chunk:
                        return
                    got.extend(chunk)

            nursery.start_soon(reader)
        with conn.cancel:
            await write_lines(conn, recv, stall_s, on_written)
        nursery.cancel_scope.cancel()
    return conn, written, bytes(got)


async def test_a_terminal_that_reads_slowly_is_never_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    # a read every 4 s: far slower than the writer (1,000 lines, many pieces), but never 5 s without one
    conn, written, got = await _run_writer(4.0, 1000)
    assert not conn.stalled and not conn.cancel.cancel_called
    assert written == [f"c{i}" for i in range(1000)]
    assert got == b"".join(f"line {i}\n".encode() for i in range(1000))


async def test_a_terminal_that_reads_nothing_is_cut_off_after_the_stall_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    conn, written, _ = await _run_writer(None, 3)
    assert conn.stalled and conn.cancel.cancel_called
    assert written == []  # nothing left for the terminal
    assert trio.current_time() - start == 5.0


async def test_an_empty_outbox_is_no_stall(autojump_clock: trio.testing.MockClock) -> None:
    client, server = trio.testing.lockstep_stream_pair()
    send, recv = trio.open_memory_channel[tuple[bytes, str]](4)
    conn = Connection(1, server, send)

    async def on_written(_conn: Connection, command_id: str) -> None:
        pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_lines, conn, recv, 5.0, on_written)
        await trio.sleep(60.0)  # nothing queued for a minute
        assert not conn.stalled
        send.send_nowait((b"late\n", ""))
        assert await client.receive_some(5) == b"late\n"
        nursery.cancel_scope.cancel()
    assert not conn.stalled


async def test_answers_past_a_full_outbox_wait_and_go_out_in_order_as_the_terminal_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """40 answers at once into an outbox of 16 (a master's burst answered together): the rest wait in the
    connection and follow in order as the writer drains the outbox (``drain`` on each line written); the
    terminal is never cut off."""
    client, server = trio.testing.lockstep_stream_pair()
    send, recv = trio.open_memory_channel[tuple[bytes, str]](16)
    conn = Connection(1, server, send, overflow_max=64)
    lines = [f"ack {i}\n".encode() for i in range(40)]
    assert all(reply(conn, line) for line in lines)
    assert len(conn.overflow) == 24 and not conn.cancel.cancel_called
    got = bytearray()

    async def on_written(c: Connection, _command_id: str) -> None:
        drain(c)
        if not c.overflow and recv.statistics().current_buffer_used == 0:
            send.close()

    async def reader() -> None:
        while chunk := await client.receive_some(4096):
            got.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        with conn.cancel:
            await write_lines(conn, recv, 5.0, on_written)
        nursery.cancel_scope.cancel()
    assert bytes(got) == b"".join(lines)
    assert not conn.cancel.cancel_called and conn.stats["replies_waiting"] == 1


async def test_a_terminal_with_a_full_outbox_and_as_many_answers_waiting_is_cut_off() -> None:
    _, server = trio.testing.lockstep_stream_pair()
    send, _recv = trio.open_memory_channel[tuple[bytes, str]](16)
    conn = Connection(1, server, send, overflow_max=8)
    assert all(reply(conn, b"ack\n") for _ in range(16 + 8))
    assert not conn.cancel.cancel_called
    assert reply(conn, b"one too many\n") is False
    assert conn.cancel.cancel_called
