"""Configuration from a TOML file (the embedded default): read, watched for changes, edited in place
(``config set`` keeps the file's comments and layout: tomlkit)."""

from __future__ import annotations

import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import tomlkit
import trio

from echo.domain.config import Config, ConfigError, config_from_dict


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from exc
    except ValueError as exc:  # TOMLDecodeError, or an integer with more digits than Python converts
        raise ConfigError(f"{p}: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{p}: arrays or inline tables nested too deep to read") from exc


def load_toml(path: str | Path) -> Config:
    return config_from_dict(read_toml(path))


def _split(dotted: str) -> list[str]:
    parts = dotted.split(".")
    if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and parts[0] != "policy"):
        raise ConfigError(f"{dotted!r}: expected SECTION.KEY or policy.ACCOUNT.KEY")
    return parts


class FileConfigSource:
    def __init__(self, path: str | Path, poll_s: float = 1.0) -> None:
        self.path = Path(path)
        self.description = str(self.path)
        self.poll_s = poll_s

    async def read(self) -> dict[str, Any]:
        return read_toml(self.path)

    async def watch(
        self,
        on_change: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        last = self.path.read_bytes() if self.path.exists() else b""
        task_status.started()
        while True:
            await trio.sleep(self.poll_s)
            try:
                now = self.path.read_bytes()
            except OSError:
                continue
            if now != last:
                last = now
                try:
                    raw = read_toml(self.path)
                except ConfigError as exc:
                    await on_change({"__error__": str(exc)})
                    continue
                await on_change(raw)

    async def get(self, dotted: str) -> Any:
        node: Any = await self.read()
        for part in _split(dotted):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    async def set(self, dotted: str, value: Any) -> None:
        parts = _split(dotted)
        doc = (
            tomlkit.parse(self.path.read_text(encoding="utf-8")) if self.path.exists() else tomlkit.document()
        )
        node: Any = doc
        for part in parts[:-1]:
            if part not in node:
                node[part] = tomlkit.table()
            node = node[part]
        node[parts[-1]] = value
        self._write(tomlkit.dumps(doc))

    async def replace(self, raw: dict[str, Any]) -> None:
        self._write(tomlkit.dumps(raw))

    def _write(self, text: str) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)  # atomic: a watcher never reads half a file

    async def aclose(self) -> None:
        return None
