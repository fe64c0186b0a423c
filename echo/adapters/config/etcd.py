"""Configuration in etcd (v3), live: aetcd on the trio-asyncio loop (STACK.md), the key tree of
``echo.domain.config_tree``. A watch on ``/echo/`` reports every change; a burst (an import) is read once
it has been quiet for ``settle_s``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aetcd
import trio
from trio_asyncio import aio_as_trio

from echo.adapters.aio import asyncio_loop
from echo.domain.config import ConfigError
from echo.domain.config_tree import PREFIX, decode_value, dotted_to_key, encode_value, from_tree, to_tree


class EtcdUnavailable(ConfigError):
    """etcd could not be reached or refused the request."""


def parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "etcd" or not parts.hostname:
        raise ConfigError(f"expected etcd://HOST:PORT, got {url!r}")
    return parts.hostname, parts.port or 2379


class EtcdConfigSource:
    def __init__(self, client: aetcd.Client, description: str, settle_s: float = 0.1) -> None:
        self._client = client
        self.description = description
        self.settle_s = settle_s

    async def _aio(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        try:
            return await aio_as_trio(fn)(*args)
        except aetcd.exceptions.ClientError as exc:
            raise EtcdUnavailable(f"etcd at {self.description}: {exc}") from exc

    async def tree(self) -> dict[str, str]:
        rows = await self._aio(self._client.get_prefix, PREFIX.encode())
        return {kv.key.decode(): kv.value.decode() for kv in rows}

    async def read(self) -> dict[str, Any]:
        return from_tree(await self.tree())

    async def watch(
        self,
        on_change: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        changed = trio.Event()

        async def listen(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal changed
            watch = await self._aio(self._client.watch_prefix, PREFIX.encode())
            task_status.started()
            try:
                async for _event in aio_as_trio(watch):
                    changed.set()
            except Exception as exc:  # the stream broke (server gone): the caller re-establishes it
                raise EtcdUnavailable(f"etcd watch at {self.description} ended: {exc!r}") from exc
            finally:
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await aio_as_trio(watch.cancel)()
            raise EtcdUnavailable(f"etcd watch at {self.description} ended")

        async with trio.open_nursery() as nursery:
            await nursery.start(listen)
            task_status.started()
            while True:
                await changed.wait()
                # settle: an import is many puts; read once they stop
                while True:
                    changed = trio.Event()
                    with trio.move_on_after(self.settle_s) as quiet:
                        await changed.wait()
                    if quiet.cancelled_caught:
                        break
                try:
                    raw = await self.read()
                except EtcdUnavailable:
                    raise
                except ConfigError as exc:  # a key outside the tree: reported, the last good config stays
                    raw = {"__error__": str(exc)}
                await on_change(raw)

    async def get(self, dotted: str) -> Any:
        value = await self._aio(self._client.get, dotted_to_key(dotted).encode())
        return None if value is None else decode_value(value.value.decode())

    async def set(self, dotted: str, value: Any) -> None:
        await self._aio(self._client.put, dotted_to_key(dotted).encode(), encode_value(value).encode())

    async def replace(self, raw: dict[str, Any]) -> None:
        tree = to_tree(raw)
        await self._aio(self._client.delete_prefix, PREFIX.encode())
        for key, value in tree.items():
            await self._aio(self._client.put, key.encode(), value.encode())

    async def aclose(self) -> None:
        await aio_as_trio(self._client.close)()


@asynccontextmanager
async def open_etcd(url: str, *, timeout_s: float = 5.0) -> AsyncIterator[EtcdConfigSource]:
    """An etcd config source for the duration of the block, on the trio-asyncio loop already open in this
    task (one loop per process: gRPC may share it), or on one opened here."""
    host, port = parse_url(url)
    async with asyncio_loop():
        client = aetcd.Client(host=host, port=port, timeout=timeout_s if math.isfinite(timeout_s) else None)
        source = EtcdConfigSource(client, f"{host}:{port}")
        try:
            await source._aio(client.connect)
            yield source
        finally:
            with trio.CancelScope(shield=True):
                await source.aclose()
