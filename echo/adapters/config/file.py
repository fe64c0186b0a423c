"""Configuration from a TOML file (the embedded default)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from echo.domain.config import Config, ConfigError, config_from_dict


def load_toml(path: str | Path) -> Config:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    return config_from_dict(raw)
