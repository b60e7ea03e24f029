"""Workers as local processes, their output in a log file per worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 10.0


@dataclass
class WorkerLaunch:
    """Everything a provider needs to start one worker."""

    worker_id: str
    python: str
    env: dict[str, str]
    log_path: Path
    cwd: str
    args: tuple[str, ...] = ("-m", "runpod_flash.runtime")  # what the interpreter runs


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a worker's whole process group (a worker's own children go with it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_leftover(pid: int, worker_id: str) -> None:
    """Kill a worker of an earlier platform run, if that pid still is that worker."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return
    if f"FLASH_WORKER_ID={worker_id}".encode() in environ.split(b"\0"):
        kill_group(pid)


class LocalProcess:
    """A running worker process (leading its own process group); `exited` resolves when it
    ends, for whatever reason."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid
        self.exited: asyncio.Task[int] = asyncio.ensure_future(process.wait())

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (in-flight work finishes), then SIGKILL to the group after `grace_s`."""
        if self._process.returncode is None:
            kill_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), grace_s)
        kill_group(self.pid)  # also whatever it started and left behind


class LocalProvider:
    async def start(self, launch: WorkerLaunch) -> LocalProcess:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab", buffering=0) as log:
            process = await asyncio.create_subprocess_exec(
                launch.python, "-u", *launch.args,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, **launch.env}, cwd=launch.cwd, start_new_session=True,
            )
        return LocalProcess(process)
