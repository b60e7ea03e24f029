"""Isolated Python environments for functions that declare their own dependencies.

Each dependency set gets its own uv venv, cached by a hash of the set and the base interpreter.
The venv is layered on the caller's environment: a .pth file adds the base interpreter's
site-packages after the venv's own, so the platform's packages (runpod_flash included, even as an
editable install) stay importable while the venv's packages win. The base is never modified.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uv import find_uv_bin

_INSTALL_TIMEOUT_S = 600
_VENV_TIMEOUT_S = 120
_APT_TIMEOUT_S = 300

# Debian package or command names; anything else could smuggle options into apt-get as root.
_SYSTEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._:-]*")

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
) -> str:
    """The python executable that workers for this dependency set should run with."""
    if system_dependencies:
        await _ensure_system_packages(system_dependencies, progress)
    if not dependencies:
        return base_python
    deps = sorted(set(dependencies))
    key = _environment_key(base_python, await _python_version(base_python), deps)
    env_dir = envs_dir / key[:16]
    python = str(env_dir / "bin" / "python")
    if (env_dir / ".ready").exists():
        return python
    envs_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = await _lock(envs_dir / f"{key}.lock")
    try:
        if not (env_dir / ".ready").exists():
            await _build(base_python, deps, env_dir, progress)
    finally:
        os.close(lock_fd)
    return python


def _environment_key(base_python: str, version: str, deps: list[str]) -> str:
    """Hash of everything an environment depends on; the unresolved bin dir tells venvs apart."""
    identity = [
        deps,
        os.path.realpath(base_python),
        os.path.dirname(os.path.abspath(base_python)),
        version,
    ]
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
    base_python: str, deps: list[str], env_dir: Path, progress: Callable[[str], None]
) -> None:
    """Builds the environment in a temporary dir and renames it into place once complete."""
    # We hold the lock, so temporary dirs and an unready env_dir are leftovers of a crash.
    for leftover in [*env_dir.parent.glob(f"{env_dir.name}.tmp-*"), env_dir]:
        await asyncio.to_thread(shutil.rmtree, leftover, True)
    tmp = env_dir.with_name(f"{env_dir.name}.tmp-{os.getpid()}")
    progress(f"Creating environment for {', '.join(deps)}")
    uv = find_uv_bin()
    env = {**os.environ, "NO_COLOR": "1"}
    try:
        ok, tail = await _run(
            [uv, "venv", "--relocatable", "--python", base_python, str(tmp)],
            progress, _VENV_TIMEOUT_S, env,
        )
        if not ok:
            raise DependencyInstallError(
                f"Could not create an environment from {base_python}:\n{_failure(tail)}\n"
                "Check that the base interpreter works and that the disk has free space."
            )
        await _layer_on_base(base_python, tmp)
        ok, tail = await _run(
            [uv, "pip", "install", "--python", str(tmp / "bin" / "python"), "--", *deps],
            progress, _INSTALL_TIMEOUT_S, env,
        )
        if not ok:
            raise DependencyInstallError(
                f"Could not install dependencies [{', '.join(deps)}]:\n{_failure(tail)}\n"
                "Check that each package name and version exists on your package index and fix "
                "the function's `dependencies`."
            )
        (tmp / ".ready").touch()
        try:
            tmp.rename(env_dir)
        except OSError:
            if not (env_dir / ".ready").exists():
                raise  # not a lost race: a real filesystem problem
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _layer_on_base(base_python: str, venv: Path) -> None:
    """Makes the base's packages and their .pth files (editable installs) load after the venv's."""
    site_dirs = (await _describe_base(base_python))["site_dirs"]
    existing = [d for d in dict.fromkeys(site_dirs) if os.path.isdir(d)]
    site_packages = next((venv / "lib").glob("python*/site-packages"))
    lines = [f"import site; site.addsitedir({d!r})\n" for d in existing]
    (site_packages / _LAYER_PTH).write_text("".join(lines))


async def _ensure_system_packages(names: list[str], progress: Callable[[str], None]) -> None:
    """Installs missing system packages with apt-get when we are root, else explains the fix."""
    invalid = [name for name in names if not _SYSTEM_NAME.fullmatch(name)]
    if invalid:
        raise DependencyInstallError(
            f"Invalid system dependency names: {', '.join(map(repr, invalid))}. "
            "List one package name per entry, e.g. system_dependencies=['ffmpeg', 'libgl1']."
        )
    missing = [name for name in dict.fromkeys(names) if not await _system_package_present(name)]
    if not missing:
        return
    reason = "not running as root with apt-get, so they were not installed automatically."
    if os.geteuid() == 0 and shutil.which("apt-get"):
        progress(f"Installing system packages: {' '.join(missing)}")
        ok, tail = await _apt_get_install(missing, progress)
        if ok:
            return
        reason = f"apt-get failed:\n{_failure(tail)}"
    raise DependencyInstallError(
        f"Missing system packages: {', '.join(missing)}; {reason}\nInstall them with your system "
        f"package manager, e.g. `sudo apt-get install {' '.join(missing)}`, and retry."
    )


async def _system_package_present(name: str) -> bool:
    """Whether name is a command on PATH or an installed Debian package."""
    if shutil.which(name):
        return True
    if not shutil.which("dpkg-query"):
        return False
    proc = await asyncio.create_subprocess_exec(
        "dpkg-query", "-W", "--showformat=${Status}", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return proc.returncode == 0 and out.decode().strip() == "install ok installed"


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
