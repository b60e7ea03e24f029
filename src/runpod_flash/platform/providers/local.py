"""Workers as local processes, their output in a log file per worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STOP_GRACE_S = 10.0
RUNTIME_ARGS = ("-m", "runpod_flash.runtime")
FORK_WORKERS = os.environ.get("FLASH_FORK_WORKERS", "1") != "0"
ZYGOTE_SPAWN_TIMEOUT_S = 10.0
ZYGOTE_READY_TIMEOUT_S = 60.0


@dataclass
class WorkerLaunch:
    """Everything a provider needs to start one worker."""

    worker_id: str
    python: str
    env: dict[str, str]
    log_path: Path
    cwd: str
    args: tuple[str, ...] = RUNTIME_ARGS  # what the interpreter runs


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


class ForkedProcess(LocalProcess):
    """A worker forked by a zygote; the zygote reports its exit (it is not our child)."""

    def __init__(self, pid: int, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self.exited = exited  # type: ignore[assignment]

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if not self.exited.done():
            kill_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), grace_s)
        kill_group(self.pid)


class Zygote:
    """One pre-imported `runpod_flash.runtime.zygote` per interpreter, forking workers."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._spawned: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._next_id = 0
        self.alive = True
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    async def ready(self) -> None:
        """Wait until the zygote has imported everything (it says so on stdout)."""
        await asyncio.wait_for(asyncio.shield(self._ready), ZYGOTE_READY_TIMEOUT_S)

    @classmethod
    async def start(cls, python: str, log_path: Path) -> Zygote:
        with open(log_path, "ab", buffering=0) as log:
            process = await asyncio.create_subprocess_exec(
                python, "-m", "runpod_flash.runtime.zygote",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                start_new_session=True,
            )
        return cls(process)

    def _exit_future(self, pid: int) -> asyncio.Future[int]:
        future = self._exits.get(pid)
        if future is None:
            future = self._exits[pid] = asyncio.get_running_loop().create_future()
        return future

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            message = json.loads(line)
            if "ready" in message:
                self._ready.set_result(None)
            elif "exit" in message:
                self._exit_future(message["exit"]).set_result(message["code"])
            elif (waiter := self._spawned.pop(message["id"], None)) is not None:
                waiter.set_result(message["pid"])
        self.alive = False  # its workers exit on their own (their parent is gone)
        if not self._ready.done():
            self._ready.set_exception(OSError("worker zygote exited while importing"))
        for waiter in self._spawned.values():
            if not waiter.done():
                waiter.set_exception(OSError("worker zygote exited"))
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(-1)

    async def spawn(self, launch: WorkerLaunch) -> ForkedProcess:
        assert self._process.stdin is not None
        self._next_id += 1
        waiter = self._spawned[self._next_id] = asyncio.get_running_loop().create_future()
        request = {"id": self._next_id, "env": {**os.environ, **launch.env},
                   "cwd": launch.cwd, "log": str(launch.log_path)}
        self._process.stdin.write(json.dumps(request).encode() + b"\n")
        await self._process.stdin.drain()
        pid = await asyncio.wait_for(waiter, ZYGOTE_SPAWN_TIMEOUT_S)
        return ForkedProcess(pid, self._exit_future(pid))

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()


class LocalProvider:
    """Workers as local processes: forked from a pre-imported zygote when they run our
    runtime (cold start without the import cost), started plainly otherwise."""

    def __init__(self, logs_dir: Path, fork: bool = FORK_WORKERS) -> None:
        self._logs_dir = logs_dir
        self._fork = fork
        self._zygotes: dict[str, Zygote] = {}
        self._warming: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, launch: WorkerLaunch) -> LocalProcess:
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._fork and launch.args == RUNTIME_ARGS:
            zygote = self._zygotes.get(launch.python)
            if zygote is not None and zygote.alive:
                with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError):
                    return await zygote.spawn(launch)
            elif launch.python not in self._warming:  # this worker starts plainly; later
                self._warming.add(launch.python)      # ones fork from a ready zygote
                self._background(self._warm_zygote(launch.python))
        with open(launch.log_path, "ab", buffering=0) as log:
            process = await asyncio.create_subprocess_exec(
                launch.python, "-u", *launch.args,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, **launch.env}, cwd=launch.cwd, start_new_session=True,
            )
        return LocalProcess(process)

    async def _warm_zygote(self, python: str) -> None:
        try:
            zygote = await Zygote.start(python, self._logs_dir / "zygote.log")
            await zygote.ready()
            self._zygotes[python] = zygote
        except OSError:
            pass  # workers keep starting plainly
        finally:
            self._warming.discard(python)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for zygote in self._zygotes.values():
            zygote.close()
