"""What the supervisor's unit tests share: a fake provider (the OS boundary, the only part
faked), a real `/ping` server, and helpers that place workers and make them ready. The
Fleet, Store, Credentials and the rest are real."""

from __future__ import annotations

import asyncio
import contextlib
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runpod_flash.platform.credentials import Credentials
from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.fleet import Fleet
from runpod_flash.platform.providers.base import (
    PlacementError,
    Resources,
    WorkerLaunch,
)
from runpod_flash.platform.store import Store
from runpod_flash.platform.supervisor import Supervisor
from runpod_flash.platform.volumes import Volumes

PLATFORM_URL = "http://127.0.0.1:9"

# -- the fake provider ------------------------------------------------------------------------


class FakeProcess:
    """A worker process that exits when the test says so (or when it is stopped)."""

    def __init__(self, launch: WorkerLaunch, pid: int) -> None:
        self.launch = launch
        self.pid: int | None = pid
        self.start: int | None = 10_000 + pid
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.host = "127.0.0.1"
        self.node: str | None = None
        self.gpus: list[str] = []
        self.stops: list[float] = []  # grace_s of every stop()
        self.on_stop: Callable[[], None] = lambda: None

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    def exit(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)

    async def stop(self, grace_s: float) -> None:
        self.on_stop()
        self.stops.append(grace_s)
        self.exit(-15)


class FakeProvider:
    """Places any worker asking for at most `gpus` GPUs; `placing` holds starts back."""

    name = "fake"

    def __init__(self, gpus: int = 0) -> None:
        self.gpu_ids = [f"gpu{i}" for i in range(gpus)]
        self.launches: list[WorkerLaunch] = []
        self.processes: dict[str, FakeProcess] = {}  # worker id -> its process
        self.placing: asyncio.Event | None = None  # set: placement completes
        self.start_error: Exception | None = None
        self.closed = False

    def gpus(self) -> list[str]:
        return list(self.gpu_ids)

    def check(self, resources: Resources, endpoint_name: str) -> None:
        if resources.gpus > len(self.gpu_ids):
            raise PlacementError(
                f"'{endpoint_name}' asks for {resources.gpus} GPUs; the fake provider has "
                f"{len(self.gpu_ids)}"
            )

    async def start(self, launch: WorkerLaunch) -> FakeProcess:
        self.launches.append(launch)
        if self.placing is not None:
            await self.placing.wait()
        if self.start_error is not None:
            raise self.start_error
        process = FakeProcess(launch, len(self.processes) + 1)
        self.processes[launch.worker_id] = process
        return process

    def reclaim(self, pid: int, start: int | None) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "nodes": 1, "gpus": self.gpus()}

    def close(self) -> None:
        self.closed = True


# -- a real HTTP server for /ping -------------------------------------------------------------


class PingServer:
    """Answers every request with `status` ("hang": never answers; "close": hangs up;
    "echo": 200 with the request's body)."""

    def __init__(self) -> None:
        self.status: int | str = 200
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> PingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.wait_for(asyncio.gather(*self._handlers, return_exceptions=True), 5)
        await self._server.wait_closed()

    def requests(self) -> list[tuple[bytes, bytes]]:
        """(head, body) of each request received but the health checks' `/ping`."""
        return [(head, body) for head, body in zip(self.heads, self.bodies, strict=True)
                if not head.startswith(b"GET /ping ")]

    def header(self, name: bytes, request: int = -1) -> bytes | None:
        """A header of a request received (the last one by default)."""
        for line in self.heads[request].split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(declared_length(head))
                self.heads.append(head)
                self.bodies.append(body)
                if self.status == "hang":
                    continue
                if self.status == "close":
                    break
                if self.status == "echo":
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b"
                                 % (len(body), body))
                else:
                    writer.write(f"HTTP/1.1 {self.status} Status\r\nContent-Length: 0\r\n\r\n"
                                 .encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def declared_length(head: bytes) -> int:
    """The Content-Length of a request or response head (0 without one)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


# -- helpers ----------------------------------------------------------------------------------


async def until(predicate: Callable[[], Any], timeout: float = 2.0) -> Any:
    """Let the event loop run until `predicate()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {predicate}")
        await asyncio.sleep(0.005)


def later(seconds: float) -> types.SimpleNamespace:
    """A `time` module whose monotonic clock is `seconds` ahead, for one module under test
    (the event loop's clock is left alone)."""
    return types.SimpleNamespace(monotonic=lambda: time.monotonic() + seconds,
                                 time=time.time, sleep=time.sleep)


def make_endpoint(fleet: Fleet, endpoint_id: str = "ep", kind: str = "deployed",
                  status: str = "ready", **spec: Any) -> Endpoint:
    """An endpoint the fleet manages (built and ready unless `status` says otherwise)."""
    endpoint = Endpoint(endpoint_id, endpoint_id, kind, {"name": endpoint_id, **spec},
                        status=status)
    fleet.endpoints[endpoint_id] = endpoint
    fleet.store.save_endpoint(endpoint_id, endpoint.name, kind, endpoint.spec)
    return endpoint


def placed(provider: FakeProvider, worker: Worker) -> FakeProcess:
    return provider.processes[worker.id]


async def started(fleet: Fleet, endpoint: Endpoint) -> Worker:
    """A worker of the endpoint, placed (its process runs) but not yet ready."""
    worker = fleet.start_worker(endpoint)
    assert worker is not None
    await until(lambda: worker.process is not None)
    return worker


async def ready(sup: Supervisor, endpoint: Endpoint, ping: PingServer) -> Worker:
    """A worker made ready the real way: it reports ready, `/ping` (200) confirms it."""
    worker = await started(sup.fleet, endpoint)
    assert sup.health.mark_ready(worker.id, ping.port)
    await until(lambda: worker.state == "ready")
    return worker


@contextlib.asynccontextmanager
async def platform(store: Store, provider: FakeProvider) -> AsyncIterator[Supervisor]:
    sup = Supervisor(store, PLATFORM_URL, "platform-token", provider)
    try:
        yield sup
    finally:
        for worker in sup.fleet.workers.values():
            worker.in_flight = 0  # nothing to wait for
        await sup.shutdown()


def temporary_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The platform's store in `tmp_path`, with FLASH_HOME (worker logs) there too."""
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "home"))
    store = Store(tmp_path / "state.db")
    yield store
    store.close()


@contextlib.asynccontextmanager
async def fleet_of(store: Store, provider: FakeProvider) -> AsyncIterator[Fleet]:
    fleet = Fleet(store, provider, Credentials(), Volumes(), PLATFORM_URL)
    try:
        yield fleet
    finally:
        for worker in fleet.workers.values():
            worker.in_flight = 0
        await fleet.stop_all()
