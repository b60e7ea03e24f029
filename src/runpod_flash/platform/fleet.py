"""Every endpoint's workers: started through the provider, watched until they exit, drained
and stopped. The other parts of the supervisor (routing, health, rollouts, queue presence)
decide *when*; this module is *how*."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from runpod_flash.platform.autoscaler import Load, desired_workers
from runpod_flash.platform.credentials import Credentials
from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.launch import log_path, worker_env, worker_launch
from runpod_flash.platform.providers.base import (
    PlacementError,
    Provider,
    Resources,
    WorkerLaunch,
)
from runpod_flash.platform.store import Store
from runpod_flash.platform.volumes import Volumes

logger = logging.getLogger("runpod_flash.platform")

WORKER_START_TIMEOUT_S = float(os.environ.get("FLASH_WORKER_START_TIMEOUT", "60"))
DRAIN_TIMEOUT_S = float(os.environ.get("FLASH_DRAIN_TIMEOUT", "30"))
MAX_START_BACKOFF_S = 30.0
IDLE_STOP_GRACE_S = 3.0
LOG_TAIL_LINES = 20


class Fleet:
    def __init__(self, store: Store, provider: Provider, credentials: Credentials,
                 volumes: Volumes, platform_url: str) -> None:
        self.store = store
        self.provider = provider
        self.credentials = credentials
        self.volumes = volumes
        self.platform_url = platform_url
        self.endpoints: dict[str, Endpoint] = {}
        self.workers: dict[str, Worker] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # the job queue's side (set by `Supervisor.connect_queue`)
        self.on_worker_exit: Callable[[str], None] = lambda worker_id: None
        self.on_worker_draining: Callable[[str], None] = lambda worker_id: None
        self.queue_load: Callable[[str], Load] = lambda endpoint_id: Load()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task the fleet keeps (and cancels at shutdown)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def lock(self, endpoint_id: str) -> asyncio.Lock:
        """Changes to one endpoint (deploy, remove) happen one at a time."""
        lock = self._locks.get(endpoint_id)
        if lock is None:
            lock = self._locks[endpoint_id] = asyncio.Lock()
        return lock

    def forget_endpoint(self, endpoint_id: str) -> None:
        self.endpoints.pop(endpoint_id, None)
        lock = self._locks.get(endpoint_id)
        if lock is not None and not lock.locked():
            del self._locks[endpoint_id]
        self.credentials.forget_endpoint(endpoint_id)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.drain(w) for w in list(self.workers.values())),
                             return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        self.provider.close()

    # -- scaling ----------------------------------------------------------------------------

    def load(self, endpoint: Endpoint) -> Load:
        if endpoint.spec.get("type") == "QB":
            return self.queue_load(endpoint.id)
        busy = sum(w.in_flight for w in endpoint.workers.values() if w.state == "ready")
        return Load(busy=busy, waiting=endpoint.waiting)

    def scale(self, endpoint: Endpoint) -> None:
        """Start workers up to what the autoscaler wants (paused during a crash loop)."""
        if endpoint.status != "ready" or time.monotonic() < endpoint.retry_start_at:
            return
        live = len(endpoint.live_workers())
        for _ in range(desired_workers(endpoint.spec, live, self.load(endpoint)) - live):
            if self.start_worker(endpoint) is None:
                return

    # -- one worker's life ------------------------------------------------------------------

    def start_worker(
        self,
        endpoint: Endpoint,
        spec: dict[str, Any] | None = None,
        python: str | None = None,
        version: str | None = None,
    ) -> Worker | None:
        """Start a worker of the endpoint's current version (or of the one given); None when
        the provider can never place it (the endpoint says why)."""
        spec = spec or endpoint.spec
        try:
            self.provider.check(Resources.of(spec), endpoint.name)
        except PlacementError as exc:
            endpoint.last_start_failure = str(exc)
            if endpoint.kind == "live":
                endpoint.status, endpoint.error = "failed", str(exc)
            endpoint.notify()
            return None
        worker_id = f"w-{uuid.uuid4().hex[:10]}"
        worker = Worker(worker_id, endpoint.id, version or endpoint.version,
                        log_path(endpoint.id, worker_id), [])
        peers = frozenset(path.rsplit("/", 1)[-1] for path in (spec.get("peers") or {}).values())
        grant = self.credentials.issue(worker_id, endpoint.id, endpoint.kind == "live", peers)
        worker.set_gateway_secret(grant.gateway_secret.encode())
        endpoint.stats["cold_starts"] += 1
        endpoint.workers[worker_id] = worker
        self.workers[worker_id] = worker
        self.store.save_worker(worker_id, endpoint.id, None, "starting", str(worker.log_path))
        env = worker_env(self.platform_url, endpoint, worker, spec, grant,
                         self.volumes.worker_env(spec))
        launch = worker_launch(endpoint, worker, spec, python or endpoint.python or "python3",
                               env)
        self.spawn(self._run(endpoint, worker, launch))
        return worker

    async def _run(self, endpoint: Endpoint, worker: Worker, launch: WorkerLaunch) -> None:
        """Start one worker and watch it until it exits; failures are visible, never silent."""
        try:
            process = await self.provider.start(launch)
        except (OSError, PlacementError) as exc:
            endpoint.last_start_failure = f"cannot start worker process: {exc}"
            self._start_failed(endpoint)
            self._forget(endpoint, worker, "dead")
            return
        worker.process, worker.host, worker.node, worker.gpus = (
            process, process.host, process.node, process.gpus)
        if worker.state in ("stopping", "draining"):  # stopped while being placed
            await process.stop(grace_s=0)
        self.store.save_worker(worker.id, endpoint.id, process.pid, "starting",
                               str(worker.log_path), process.start)
        try:
            code = await asyncio.wait_for(asyncio.shield(process.exited), WORKER_START_TIMEOUT_S)
        except asyncio.TimeoutError:
            if worker.state == "starting":
                endpoint.last_start_failure = (
                    f"worker {worker.id} was not ready after {WORKER_START_TIMEOUT_S:.0f}s; "
                    f"last log lines:\n{self.log_tail(worker)}"
                )
                await process.stop(grace_s=1)
            code = await process.exited
        if worker.state == "starting":
            endpoint.last_start_failure = endpoint.last_start_failure or (
                f"worker {worker.id} exited with code {code} before it was ready; "
                f"last log lines:\n{self.log_tail(worker)}"
            )
            self._start_failed(endpoint)
        elif worker.state not in ("stopping", "draining"):
            logger.warning("worker %s of %s exited with code %s", worker.id, endpoint.id, code)
        expected = worker.state in ("stopping", "draining")
        await process.stop(grace_s=0)  # what it started dies with it
        self._forget(endpoint, worker, "stopped" if expected else "dead")

    @staticmethod
    def _start_failed(endpoint: Endpoint) -> None:
        """One more worker failed to start: starts pause, longer with each failure in a row
        (meanwhile callers are told why: routing's crash-loop fail-fast)."""
        endpoint.start_failures += 1
        endpoint.stats["worker_failures"] += 1
        endpoint.retry_start_at = time.monotonic() + min(
            MAX_START_BACKOFF_S, 0.5 * 2 ** (endpoint.start_failures - 1)
        )

    def _forget(self, endpoint: Endpoint, worker: Worker, final_state: str) -> None:
        self.on_worker_exit(worker.id)
        self.credentials.revoke(worker.id)
        worker.state = final_state
        endpoint.workers.pop(worker.id, None)
        endpoint.last_used = max(endpoint.last_used, worker.last_active)
        self.workers.pop(worker.id, None)
        self.store.update_worker(worker.id, final_state)
        endpoint.notify()

    def started_fine(self, endpoint: Endpoint) -> None:
        endpoint.last_start_failure = None
        endpoint.start_failures, endpoint.retry_start_at = 0, 0.0
        endpoint.notify()

    async def wait_ready(self, endpoint: Endpoint, worker: Worker) -> bool:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S + 5
        while worker.state == "starting" and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(endpoint.changed.wait(), deadline - time.monotonic())
        return worker.state == "ready"

    # -- stopping ---------------------------------------------------------------------------

    async def drain(self, worker: Worker) -> None:
        """Out of routing now; stopped once its in-flight requests are done (bounded)."""
        if worker.state in ("stopped", "dead"):
            return
        worker.state = "draining"
        self.on_worker_draining(worker.id)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while worker.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if worker.process is not None:  # drained: nothing of the caller's is lost by hurrying
            await worker.process.stop(grace_s=IDLE_STOP_GRACE_S)

    async def drain_all(self, endpoint: Endpoint) -> None:
        await asyncio.gather(*(self.drain(w) for w in list(endpoint.workers.values())))

    def begin_stop(self, worker: Worker) -> None:
        """Take a worker out of routing now and stop it in the background."""
        if worker.state in ("starting", "ready"):
            self.spawn(self.drain(worker))
            worker.state = "draining"

    def kill(self, worker: Worker) -> None:
        """An unhealthy worker is stopped at once: its in-flight work cannot finish anyway."""
        if worker.state in ("starting", "ready", "draining"):
            worker.state = "stopping"
            self.on_worker_draining(worker.id)
            if worker.process is not None:
                self.spawn(worker.process.stop(grace_s=IDLE_STOP_GRACE_S))

    def log_tail(self, worker: Worker, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = worker.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
