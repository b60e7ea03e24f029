"""Workers as local processes, their output in a log file per worker."""

from __future__ import annotations

import asyncio
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


class LocalProcess:
    """A running worker process; `exited` resolves when it ends, for whatever reason."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid
        self.exited: asyncio.Task[int] = asyncio.ensure_future(process.wait())

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (uvicorn finishes in-flight requests), then SIGKILL after the grace time."""
        if self._process.returncode is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), grace_s)
        except asyncio.TimeoutError:
            self._process.kill()
            await self.exited


class LocalProvider:
    async def start(self, launch: WorkerLaunch) -> LocalProcess:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab", buffering=0) as log:
            process = await asyncio.create_subprocess_exec(
                launch.python, "-u", *launch.args,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, **launch.env}, cwd=launch.cwd,
            )
        return LocalProcess(process)
