"""The process's one trio-asyncio loop, shared by the asyncio-based clients (gRPC, etcd)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio_asyncio


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    """The trio-asyncio loop already open in this task, or one opened here for the block (two loops in
    one process conflict)."""
    if trio_asyncio.current_loop.get() is not None:
        yield
        return
    async with trio_asyncio.open_loop():
        yield
