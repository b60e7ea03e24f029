"""Isolated Python environments for functions that declare their own dependencies.

Each dependency set gets its own uv venv, cached by a hash of the set and the base interpreter.
The venv is layered on the caller's environment: a .pth file adds the base interpreter's
site-packages after the venv's own, so the platform's packages (runpod_flash included, even as an
editable install) stay importable while the venv's packages win. The base is never modified.

PyTorch comes as the build the machine can use (uv's torch backend: CPU wheels for CPU endpoints
and machines without GPUs, the driver's CUDA build otherwise), pip's index settings serve uv too,
Flash's own distribution is never installed, and system packages are installed only when the
caller approved them (`runpod_flash.dependencies`), each install recorded in
`$FLASH_HOME/system-packages.json`.
"""

from __future__ import annotations

import asyncio
import configparser
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uv import find_uv_bin

from runpod_flash import config
from runpod_flash.dependencies import (
    ENV_ASSUME_YES,
    check_system_names,
    missing_system_packages,
    split_framework,
)

_INSTALL_TIMEOUT_S = 600
_VENV_TIMEOUT_S = 120
_APT_TIMEOUT_S = 300

ENV_TORCH_BACKEND = "FLASH_TORCH_BACKEND"  # uv's values, or "none": configured sources decide
NO_TORCH_BACKEND = "none"
SYSTEM_RECORD = "system-packages.json"

# uv settings that choose package sources (or name a uv config file); when any is set, uv is
# configured and pip's settings are not translated. uv reads these itself.
_UV_SOURCE_SETTINGS = (
    "UV_INDEX", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
    "UV_NO_INDEX", "UV_CONFIG_FILE",
)
# Lines of `uv pip install` that mark a phase; the others are left out of the progress
# (a failure's message quotes uv's output).
_UV_PHASES = ("Resolved", "Downloading", "Downloaded", "Prepared", "Uninstalled", "Audited",
              "warning:", "error:")
_INSTALLED_SHOWN = 12

# Sorts after typical package .pth files so the venv's own path entries come before the base's.
_LAYER_PTH = "zzz_runpod_flash_base.pth"

_BASE_INFO = """
import json, platform, site, sys
dirs = list(site.getsitepackages())
if site.ENABLE_USER_SITE:
    dirs.append(site.getusersitepackages())
dirs += [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
print(json.dumps({"version": platform.python_version(), "site_dirs": dirs}))
"""

_versions: dict[str, str] = {}


class DependencyInstallError(Exception):
    """A function's declared dependencies could not be provided; the message says how to fix it."""


async def ensure_environment(
    base_python: str,
    dependencies: list[str],
    system_dependencies: list[str],
    envs_dir: Path,
    progress: Callable[[str], None],
    *,
    torch_backend: str | None = None,
    approved_system_dependencies: Collection[str] = (),
    endpoint: str = "",
) -> str:
    """The python executable that workers for this dependency set should run with.

    `torch_backend` is uv's `--torch-backend` (see `choose_torch_backend`); missing system
    packages are installed only if listed in `approved_system_dependencies`.
    """
    if system_dependencies:
        await _ensure_system_packages(
            system_dependencies, approved_system_dependencies, endpoint, progress
        )
    kept, dropped = split_framework(dependencies)
    if dropped:
        progress(f"Not installing {', '.join(dropped)}: workers already run with this "
                 "platform's runpod_flash, and the package from the index would shadow it")
    if not kept:
        return base_python
    deps = sorted(set(kept))
    version = await _python_version(base_python)
    key = _environment_key(base_python, version, deps, torch_backend)
    env_dir = envs_dir / key[:16]
    python = str(env_dir / "bin" / "python")
    if (env_dir / ".ready").exists():
        return python
    envs_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = await _lock(envs_dir / f"{key}.lock")
    try:
        if not (env_dir / ".ready").exists():
            await _build(base_python, deps, torch_backend, env_dir, progress)
    finally:
        os.close(lock_fd)
    return python


def choose_torch_backend(
    spec: Mapping[str, Any], gpus_present: bool, environ: Mapping[str, str] = os.environ
) -> str | None:
    """uv's `--torch-backend` for an endpoint: None leaves PyTorch to the configured sources.

    FLASH_TORCH_BACKEND (uv's values, or "none") wins, then uv's own UV_TORCH_BACKEND; else CPU
    wheels for CPU endpoints and machines without GPUs (not 5 GB of CUDA wheels), and "auto"
    (the build matching the NVIDIA driver) for GPU endpoints on a machine with GPUs.
    """
    chosen = environ.get(ENV_TORCH_BACKEND) or environ.get("UV_TORCH_BACKEND")
    if chosen:
        return None if chosen.strip().lower() == NO_TORCH_BACKEND else chosen.strip()
    wants_gpu = not spec.get("cpu") and int(spec.get("gpuCount") or 0) > 0
    return "auto" if wants_gpu and gpus_present else "cpu"


def pip_sources(environ: Mapping[str, str] = os.environ) -> list[str]:
    """pip's index and find-links settings as uv options, so a mirror set up for pip (e.g. an
    offline one) serves the environments too: uv does not read pip's configuration.

    Nothing when uv has its own source settings (environment or uv.toml): those win.
    """
    if any(environ.get(name) for name in _UV_SOURCE_SETTINGS) or _uv_config_files(environ):
        return []
    settings = _pip_settings(environ)
    args: list[str] = []
    if settings.get("no-index", "").strip().lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    if settings.get("index-url", "").strip():
        args += ["--index-url", settings["index-url"].strip()]
    extra = settings.get("extra-index-url", "").split()
    for url in extra:
        args += ["--extra-index-url", url]
    for link in settings.get("find-links", "").split():
        args += ["--find-links", link]
    if extra:  # pip picks the best version across all indexes; uv's default stops at one
        args += ["--index-strategy", "unsafe-best-match"]
    return args


def _config_dirs(environ: Mapping[str, str]) -> tuple[list[Path], Path]:
    """(system config dirs, user config dir) as the XDG base directory spec defines them."""
    system = [Path(d) for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
    user = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return system, user


def _uv_config_files(environ: Mapping[str, str]) -> list[Path]:
    system, user = _config_dirs(environ)
    candidates = [*(d / "uv" / "uv.toml" for d in system), Path("/etc/uv/uv.toml"),
                  user / "uv" / "uv.toml"]
    return [path for path in candidates if path.is_file()]


def _pip_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """pip's effective source settings: config files in pip's order ([global], then
    [install]), then PIP_* environment variables."""
    system, user = _config_dirs(environ)
    files = [*(d / "pip" / "pip.conf" for d in reversed(system)), Path("/etc/pip.conf"),
             Path.home() / ".pip" / "pip.conf", user / "pip" / "pip.conf"]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    settings: dict[str, str] = {}
    for path in files:
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            continue  # pip would complain about it; we just do not use it
        for section in ("global", "install"):
            if parser.has_section(section):
                settings.update(parser.items(section))
    for key in ("index-url", "extra-index-url", "find-links", "no-index"):
        value = environ.get("PIP_" + key.upper().replace("-", "_"))
        if value is not None:
            settings[key] = value
    return settings


def _environment_key(
    base_python: str, version: str, deps: list[str], torch_backend: str | None
) -> str:
    """Hash of everything an environment depends on; the unresolved bin dir tells venvs apart,
    the torch backend CPU from GPU builds."""
    identity: list[Any] = [
        deps,
        os.path.realpath(base_python),
        os.path.dirname(os.path.abspath(base_python)),
        version,
    ]
    if torch_backend is not None:  # keeps the keys of environments built before backends
        identity.append(torch_backend)
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


async def _python_version(python: str) -> str:
    """The interpreter's version, without a subprocess for our own or an already seen one."""
    real = os.path.realpath(python)
    if real == os.path.realpath(sys.executable):
        return platform.python_version()
    if real not in _versions:
        _versions[real] = (await _describe_base(python))["version"]
    return _versions[real]


async def _describe_base(python: str) -> dict[str, Any]:
    """Version and site directories of the base interpreter, independent of our PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = await asyncio.create_subprocess_exec(
        python, "-c", _BASE_INFO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=env,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise DependencyInstallError(
            f"Could not inspect the base interpreter {python}: {err.decode(errors='replace')}"
            " Check that it is a working Python >= 3.10."
        )
    return json.loads(out)


async def _lock(path: Path) -> int:
    """An exclusive flock on path, taken in a thread; released when the returned fd is closed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    taking = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
    try:
        await asyncio.shield(taking)
    except BaseException:
        taking.add_done_callback(lambda _: os.close(fd))  # the thread may still get the lock
        raise
    return fd


async def _build(
    base_python: str,
    deps: list[str],
    torch_backend: str | None,
    env_dir: Path,
    progress: Callable[[str], None],
) -> None:
    """Builds the environment in a temporary dir and renames it into place once complete."""
    # We hold the lock, so temporary dirs and an unready env_dir are leftovers of a crash.
    for leftover in [*env_dir.parent.glob(f"{env_dir.name}.tmp-*"), env_dir]:
        await asyncio.to_thread(shutil.rmtree, leftover, True)
    tmp = env_dir.with_name(f"{env_dir.name}.tmp-{os.getpid()}")
    started = time.monotonic()
    progress(f"Creating environment for {', '.join(deps)}")
    uv = find_uv_bin()
    env = {**os.environ, "NO_COLOR": "1"}
    try:
        ok, tail = await _run(
            [uv, "venv", "--relocatable", "--python", base_python, str(tmp)],
            lambda _: None, _VENV_TIMEOUT_S, env,
        )
        if not ok:
            raise DependencyInstallError(
                f"Could not create an environment from {base_python}:\n{_failure(tail)}\n"
                "Check that the base interpreter works and that the disk has free space."
            )
        await _layer_on_base(base_python, tmp)
        backend = ["--torch-backend", torch_backend] if torch_backend else []
        progress("Resolving requirements"
                 + (f" (PyTorch: {torch_backend} build)" if torch_backend else ""))
        phases = _UvPhases(progress)
        ok, tail = await _run(
            [uv, "pip", "install", "--python", str(tmp / "bin" / "python"), *backend,
             *pip_sources(), "--", *deps],
            phases, _INSTALL_TIMEOUT_S, env,
        )
        phases.finish()
        if not ok:
            raise DependencyInstallError(
                f"Could not install dependencies [{', '.join(deps)}]:\n{_failure(tail)}\n"
                + _install_hint(tail, torch_backend)
            )
        (tmp / ".ready").touch()
        size = await asyncio.to_thread(directory_size, tmp)
        try:
            tmp.rename(env_dir)
        except OSError:
            if not (env_dir / ".ready").exists():
                raise  # not a lost race: a real filesystem problem
        progress(f"Environment ready in {time.monotonic() - started:.1f} s, "
                 f"{size / 1e6:.1f} MB on disk")
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


def _install_hint(tail: list[str], torch_backend: str | None) -> str:
    """How to fix a failed install; PyTorch's own index being out of reach gets its own."""
    if torch_backend and any("download.pytorch.org" in line for line in tail):
        return (
            f"PyTorch's index for the '{torch_backend}' build is out of reach. Set "
            f"{ENV_TORCH_BACKEND}=none to take PyTorch from your configured package sources "
            "(pip or uv index / find-links, e.g. an offline mirror), or another uv backend "
            "(cpu, cu126, ...)."
        )
    return ("Check that each package name and version exists on your package index and fix "
            "the function's `dependencies`.")


def directory_size(path: Path) -> int:
    """Bytes the files under path take (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # gone meanwhile
    return total


class _UvPhases:
    """Turns `uv pip install` output into progress lines as they stream (resolved,
    downloading, prepared, installed); the `+ package==version` lines that follow uv's
    "Installed N packages" line are folded into it."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self._progress = progress
        self._installed_line = ""
        self._installed: list[str] = []

    def __call__(self, line: str) -> None:
        text = line.strip()
        if text.startswith("+ "):
            self._installed.append(text[2:])
        elif text.startswith("Installed"):
            self._installed_line = text
        elif text.startswith(_UV_PHASES):
            self._progress(text)

    def finish(self) -> None:
        """Reports the installed packages, once uv is done."""
        if not (self._installed_line or self._installed):
            return
        shown = ", ".join(self._installed[:_INSTALLED_SHOWN])
        more = len(self._installed) - _INSTALLED_SHOWN
        listed = shown + (f" and {more} more" if more > 0 else "")
        self._progress(": ".join(part for part in (self._installed_line, listed) if part))


async def _layer_on_base(base_python: str, venv: Path) -> None:
    """Makes the base's packages and their .pth files (editable installs) load after the venv's."""
    site_dirs = (await _describe_base(base_python))["site_dirs"]
    existing = [d for d in dict.fromkeys(site_dirs) if os.path.isdir(d)]
    site_packages = next((venv / "lib").glob("python*/site-packages"))
    lines = [f"import site; site.addsitedir({d!r})\n" for d in existing]
    (site_packages / _LAYER_PTH).write_text("".join(lines))


async def _ensure_system_packages(
    names: list[str],
    approved: Collection[str],
    endpoint: str,
    progress: Callable[[str], None],
) -> None:
    """Installs missing system packages with apt-get when we are root and the caller approved
    them (it showed the user what apt-get will install), else explains the fix."""
    try:
        check_system_names(names)
    except ValueError as exc:
        raise DependencyInstallError(str(exc)) from None
    missing = await asyncio.to_thread(missing_system_packages, names)
    if not missing:
        return
    manual = (f"Install them with your system package manager, e.g. "
              f"`sudo apt-get install {' '.join(missing)}`, and retry.")
    if not _apt_available():
        raise DependencyInstallError(
            f"Missing system packages: {', '.join(missing)}; not running as root with "
            f"apt-get, so they were not installed automatically.\n{manual}"
        )
    unapproved = [name for name in missing if name not in approved]
    if unapproved:
        raise DependencyInstallError(
            f"Missing system packages: {', '.join(unapproved)}; installing them was not "
            "approved. A call or `flash deploy` on a terminal asks first; without one, pass "
            f"`flash deploy --yes` or set {ENV_ASSUME_YES}=1 for the caller.\n{manual}"
        )
    progress(f"apt-get will install: {', '.join(missing)}")
    ok, tail = await _apt_get_install(missing, progress)
    if not ok:
        raise DependencyInstallError(
            f"Missing system packages: {', '.join(missing)}; apt-get failed:\n"
            f"{_failure(tail)}\n{manual}"
        )
    installed = await asyncio.to_thread(record_system_install, missing, endpoint)
    progress(f"Installed system packages: {', '.join(installed)} "
             f"(recorded in {config.flash_home() / SYSTEM_RECORD})")


def _apt_available() -> bool:
    """Whether this process can install system packages: root, on a system with apt-get."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def record_system_install(names: list[str], endpoint: str) -> list[str]:
    """Adds package, version, time and endpoint of each install to the record in FLASH_HOME;
    returns "name version" for each."""
    path = config.flash_home() / SYSTEM_RECORD
    now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    entries = [{"package": name, "version": _dpkg_version(name), "installed_at": now,
                "endpoint": endpoint} for name in names]
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two endpoints may install at once
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            record = []
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps([*record, *entries], indent=2) + "\n")
        os.replace(partial, path)
    finally:
        os.close(fd)
    return [f"{e['package']} {e['version']}".rstrip() for e in entries]


def _dpkg_version(name: str) -> str:
    """The installed version of a Debian package ("" when dpkg does not know it)."""
    result = subprocess.run(
        ["dpkg-query", "-W", "--showformat=${Version}", name],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


async def _apt_get_install(
    names: list[str], progress: Callable[[str], None]
) -> tuple[bool, list[str]]:
    """apt-get install, fetching package lists first on images that ship without them."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not any(Path("/var/lib/apt/lists").glob("*_Packages*")):
        await _run(["apt-get", "update"], progress, _APT_TIMEOUT_S, env)
    return await _run(
        ["apt-get", "install", "-y", "--no-install-recommends", *names],
        progress, _APT_TIMEOUT_S, env,
    )


async def _run(
    cmd: list[str], progress: Callable[[str], None], timeout: float, env: dict[str, str]
) -> tuple[bool, list[str]]:
    """Runs cmd, forwarding each output line to progress; returns success and the output tail."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL, env=env, limit=1 << 20,
    )
    tail: deque[str] = deque(maxlen=20)

    async def pump() -> int:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line.strip():
                tail.append(line)
                progress(line)
        return await proc.wait()

    try:
        return await asyncio.wait_for(pump(), timeout) == 0, list(tail)
    except asyncio.TimeoutError:
        return False, [*tail, f"error: {Path(cmd[0]).name} timed out after {timeout:.0f} s"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _failure(tail: list[str]) -> str:
    """The lines that explain a failure: from the tool's first error line, else the last few."""
    markers = ("error:", "E:", "×")
    start = next(
        (i for i, line in enumerate(tail) if line.lstrip().startswith(markers)),
        max(len(tail) - 5, 0),
    )
    return "\n".join(tail[start:])
