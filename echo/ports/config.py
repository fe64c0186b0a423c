"""Where the configuration lives: a TOML file (embedded default) or etcd (live), behind one port."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio


class ConfigSource(Protocol):
    description: str

    async def read(self) -> dict[str, Any]:
        """The whole configuration, TOML-shaped and not yet validated. Raises ConfigError."""
        ...

    async def watch(
        self,
        on_change: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_change`` with the whole configuration after every change, until cancelled. A burst
        of changes (an import) is reported once it has settled."""
        ...

    async def get(self, dotted: str) -> Any:
        """One value by dotted key (``policy.51001.max_spread``); None when unset."""
        ...

    async def set(self, dotted: str, value: Any) -> None: ...

    async def replace(self, raw: dict[str, Any]) -> None:
        """Make the source hold exactly ``raw`` (an import)."""
        ...

    async def aclose(self) -> None: ...
