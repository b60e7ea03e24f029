"""Workers as local processes, their output in a log file per worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from runpod_flash.platform.gpus import GpuAllocator, GpuRequestError
from runpod_flash.platform.providers.base import (
    RUNTIME_ARGS,
    PlacementError,
    Resources,
    WorkerLaunch,
)
from runpod_flash.runtime.zygote import process_start

logger = logging.getLogger("runpod_flash.platform")

STOP_GRACE_S = 10.0
FORK_WORKERS = os.environ.get("FLASH_FORK_WORKERS", "1") != "0"
# The platform's own credentials never reach user code (each worker gets its own token).
_PLATFORM_SECRETS = frozenset({"FLASH_API_KEY", "FLASH_PLATFORM_TOKEN"})




def worker_environ(overrides: dict[str, str]) -> dict[str, str]:
    """A worker's environment: the platform's, less its credentials, plus `overrides`."""
    base = {k: v for k, v in os.environ.items() if k not in _PLATFORM_SECRETS}
    return {**base, **overrides}

ZYGOTE_SPAWN_TIMEOUT_S = float(os.environ.get("FLASH_ZYGOTE_SPAWN_TIMEOUT", "10"))
ZYGOTE_READY_TIMEOUT_S = 60.0


def kill_group(pid: int, start: int | None, sig: int = signal.SIGKILL) -> None:
    """Signal a worker's process group (what the worker started goes with it), unless `pid`
    now names another process: once a worker is reaped, its pid (and group id) may be reused.
    `start` is the worker's `process_start`."""
    current = process_start(pid)
    if current is not None and current != start:
        return
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # a forked worker that has not made its own group yet
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if current is not None:
                os.kill(pid, sig)
    except PermissionError:
        pass


def kill_leftover(pid: int, start: int | None) -> None:
    """Kill a worker of an earlier platform run (forked or not) if that pid still is that
    process (a worker ignoring SIGTERM outlives its platform)."""
    if start is not None and process_start(pid) == start:
        kill_group(pid, start)


def _owner_only_log(path: Path) -> int:
    """A log file (and its folder), opened for appending, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


class LocalProcess:
    """A running worker process (leading its own process group); `exited` resolves when it
    ends, for whatever reason."""

    host = "127.0.0.1"
    node: str | None = None

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.gpus: list[str] = []
        self.pid = process.pid
        self.start = process_start(process.pid)
        self.exited: asyncio.Future[int] = asyncio.ensure_future(process.wait())

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (in-flight work finishes), then SIGKILL to the group after `grace_s`."""
        if not self.exited.done():
            kill_group(self.pid, self.start, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), grace_s)
        kill_group(self.pid, self.start)  # also whatever it started and left behind


class ForkedProcess(LocalProcess):
    """A worker forked by a zygote; the zygote reports its exit (it is not our child)."""

    def __init__(self, pid: int, start: int | None, exited: asyncio.Future[int]) -> None:
        self.gpus = []
        self.pid = pid
        self.start = start
        self.exited = exited


class Zygote:
    """One pre-imported `runpod_flash.runtime.zygote` per interpreter, forking workers."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.pid = process.pid
        self._spawned: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}  # forked workers still running
        self._next_id = 0
        self.alive = True
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    async def ready(self) -> None:
        """Wait until the zygote has imported everything (it says so on stdout)."""
        await asyncio.wait_for(asyncio.shield(self._ready), ZYGOTE_READY_TIMEOUT_S)

    @classmethod
    async def start(cls, python: str, log_path: Path) -> Zygote:
        log = _owner_only_log(log_path)
        try:
            process = await asyncio.create_subprocess_exec(
                python, "-m", "runpod_flash.runtime.zygote",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                start_new_session=True, env=worker_environ({}),
            )
        finally:
            os.close(log)
        return cls(process)

    async def _read(self) -> None:
        assert self._process.stdout is not None
        try:
            async for line in self._process.stdout:
                message = json.loads(line)
                if "ready" in message:
                    self._ready.set_result(None)
                elif "exit" in message:
                    exited = self._exits.pop(message["exit"], None)
                    if exited is not None:
                        exited.set_result(message["code"])
                else:
                    self._forked(message["id"], message["pid"], message.get("start"))
        except (ValueError, KeyError, TypeError) as exc:  # a bug: stop using this zygote
            logger.error("worker zygote %s sent a bad message (%s); workers start plainly",
                         self.pid, exc)
            self.close()
        finally:
            self.alive = False  # its workers exit on their own (their parent is gone)
            if not self._ready.done():
                self._ready.set_exception(OSError("worker zygote exited while importing"))
            for waiter in self._spawned.values():
                if not waiter.done():
                    waiter.set_exception(OSError("worker zygote exited"))
            for exited in self._exits.values():
                if not exited.done():
                    exited.set_result(-1)

    def _forked(self, request_id: int, pid: int, start: int | None) -> None:
        """A fork answered; if its spawn gave up waiting (and started the worker plainly),
        this copy would run a second worker under the same id: it is killed."""
        exited = self._exits[pid] = asyncio.get_running_loop().create_future()
        waiter = self._spawned.pop(request_id, None)
        if waiter is None or waiter.done():
            logger.warning("worker zygote %s forked %s after its spawn timed out; killing it",
                           self.pid, pid)
            kill_group(pid, start)
            return
        waiter.set_result(ForkedProcess(pid, start, exited))

    async def spawn(self, launch: WorkerLaunch) -> ForkedProcess:
        assert self._process.stdin is not None
        self._next_id += 1
        request_id = self._next_id
        waiter = self._spawned[request_id] = asyncio.get_running_loop().create_future()
        request = {"id": request_id, "env": worker_environ(launch.env),
                   "cwd": launch.cwd, "log": str(launch.log_path)}
        try:
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            await self._process.stdin.drain()
            return await asyncio.wait_for(waiter, ZYGOTE_SPAWN_TIMEOUT_S)
        finally:
            self._spawned.pop(request_id, None)

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()


class LocalProvider:
    """Workers as local processes: forked from a pre-imported zygote when they run our
    runtime (cold start without the import cost), started plainly otherwise. Each gets
    GPUs of this machine by `CUDA_VISIBLE_DEVICES`, spread over them."""

    name = "local"

    def __init__(self, logs_dir: Path, gpus: GpuAllocator, fork: bool = FORK_WORKERS) -> None:
        self._logs_dir = logs_dir
        self._gpus = gpus
        self._fork = fork
        self._zygotes: dict[str, Zygote] = {}
        self._warming: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def gpus(self) -> list[str]:
        return list(self._gpus.gpus)

    def check(self, resources: Resources, endpoint_name: str) -> None:
        try:
            self._gpus.check(endpoint_name, resources.gpus)
        except GpuRequestError as exc:
            raise PlacementError(str(exc)) from None

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "nodes": 1, "gpus": self.gpus()}

    def reclaim(self, pid: int, start: int | None) -> None:
        kill_leftover(pid, start)

    async def start(self, launch: WorkerLaunch) -> LocalProcess:
        gpus = self._gpus.allocate(launch.endpoint_id, launch.resources.gpus)
        launch.env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        try:
            process = await self._start(launch)
        except BaseException:
            self._gpus.release(gpus)
            raise
        process.gpus = gpus
        process.exited.add_done_callback(lambda _: self._gpus.release(gpus))
        return process

    async def _start(self, launch: WorkerLaunch) -> LocalProcess:
        os.close(_owner_only_log(launch.log_path))  # made here: a forked worker opens it too
        if self._fork and launch.args == RUNTIME_ARGS:
            zygote = self._zygotes.get(launch.python)
            if zygote is not None and zygote.alive:
                try:
                    return await zygote.spawn(launch)
                except (OSError, asyncio.TimeoutError) as exc:
                    logger.warning("worker zygote could not fork worker %s (%s); starting it "
                                   "plainly", launch.worker_id, _describe(exc))
            elif launch.python not in self._warming:  # this worker starts plainly; later
                self._warming.add(launch.python)      # ones fork from a ready zygote
                self._background(self._warm_zygote(launch.python))
        log = _owner_only_log(launch.log_path)
        try:
            process = await asyncio.create_subprocess_exec(
                launch.python, "-u", *launch.args,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env=worker_environ(launch.env), cwd=launch.cwd, start_new_session=True,
            )
        finally:
            os.close(log)
        return LocalProcess(process)

    async def warm(self, python: str) -> None:
        """Start `python`'s zygote now, so the first worker forks too."""
        if python not in self._zygotes and python not in self._warming:
            self._warming.add(python)
            await self._warm_zygote(python)

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


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
