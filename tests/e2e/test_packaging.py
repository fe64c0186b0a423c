"""What ``pip install`` gives a trader who installs Echo without a checkout beside it: the wheel carries the
schema migrations, and the installed package finds and applies them."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _source(dest: Path) -> Path:
    """What a source distribution holds, copied (links kept) so the build writes nothing into the checkout."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "echo", dest / "echo", ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def test_the_wheel_carries_the_migrations_and_an_install_applies_them(tmp_path: Path) -> None:
    source = _source(tmp_path / "source")
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("echo_copier-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        packed = sorted(Path(n).name for n in zf.namelist() if n.startswith("echo/sql/"))
        observability = {Path(n).name for n in zf.namelist() if n.startswith("echo/observability/")}
        zf.extractall(tmp_path / "installed")
    assert packed == sorted(p.name for p in (ROOT / "echo" / "sql").glob("*.sql"))
    assert observability == {"alerts.yml", "grafana-dashboard.json"}  # the dashboard and the alert rules

    # the unpacked wheel ahead of the checkout on the path: as a site-packages install sees itself
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "installed")}
    db = tmp_path / "echo.db"
    done = subprocess.run(
        [sys.executable, "-m", "echo", "migrate", "--store", f"sqlite:///{db}"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    where = subprocess.run(
        [sys.executable, "-c", "from echo.adapters.store import migrations as m; print(m.SQL_DIR)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "installed"), where
    with sqlite3.connect(db) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [p.name[:4] for p in sorted((ROOT / "echo" / "sql").glob("*.sql"))]
