"""Starting and stopping platforms the tests own, by process id, with bounded waits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runpod_flash import control as client

WAIT_S = 30.0


def wait_for(predicate: Any, timeout: float = WAIT_S, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    return True


def platform_status(home: Path | None = None) -> dict[str, Any]:
    platform = platform_in(home)
    assert platform is not None, "no platform is running"
    return platform.call("GET", "/api/v1/status")


def platform_in(home: Path | None) -> client.Platform | None:
    """The running platform of FLASH_HOME `home` (the test session's when None)."""
    if home is None:
        return client.find_running()
    try:
        url = json.loads((home / "platform.json").read_text())["url"]
        token = (home / "token").read_text().strip()
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return client.Platform(url, token)


def worker_pids(status: dict[str, Any], name: str) -> list[int]:
    return [
        worker["pid"]
        for endpoint in status["endpoints"] if endpoint["name"] == name
        for worker in endpoint["workers"] if worker["pid"]
    ]


def stop_platform(home: Path | None = None) -> None:
    """Stop the platform of `home` and every worker it started; SIGKILL what lingers."""
    platform = platform_in(home)
    if platform is None:
        return
    try:
        status = platform.call("GET", "/api/v1/status", timeout=5)
    except (OSError, client.PlatformError):
        return
    pids = [status["pid"]] + [
        worker["pid"] for endpoint in status["endpoints"] for worker in endpoint["workers"]
        if worker["pid"]
    ]
    with contextlib.suppress(OSError, client.PlatformError):
        platform.call("POST", "/api/v1/shutdown", timeout=5)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_python(
    code_or_path: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Any = None
) -> subprocess.CompletedProcess[str]:
    """Run a script (a path) or code (a string) in a fresh interpreter, bounded in time."""
    args = [code_or_path] if code_or_path.endswith(".py") else ["-c", code_or_path]
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def flash(*args: str, env: dict[str, str] | None = None, cwd: Any = None,
          timeout: float = 240, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `flash` command line in a fresh interpreter, bounded in time (`input`: what
    is typed at its prompts)."""
    return subprocess.run(
        [sys.executable, "-m", "runpod_flash.cli", *args], capture_output=True, text=True,
        timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})}, input=input,
    )


class ProjectHome:
    """A private FLASH_HOME (its platform is the test's to stop) and a project folder whose
    `svc.py` holds `service`; `env` adds platform settings."""

    def __init__(self, root: Path, service: str, **env: str) -> None:
        self.path = root / "home"
        self.project = root / "project"
        self.project.mkdir()
        (self.project / "svc.py").write_text(service)
        self.env = {"FLASH_HOME": str(self.path), "FLASH_PLATFORM_PORT": "0", **env}

    def run(self, code: str, timeout: float = 180, **env: str) -> Any:
        """Run `code` (with asyncio, json and `svc` imported) in a fresh interpreter; its
        last line of output, parsed as JSON."""
        import textwrap

        script = "import asyncio, json, svc\n" + textwrap.dedent(code)
        result = run_python(script, env={**self.env, **env}, cwd=self.project, timeout=timeout)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    def status(self) -> dict[str, Any]:
        return platform_status(self.path)
