"""Endpoints and their workers: start, route, keep warm, stop when idle, replace when dead."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runpod_flash import config
from runpod_flash.platform.environments import DependencyInstallError, ensure_environment
from runpod_flash.platform.gpus import GpuAllocator, GpuRequestError
from runpod_flash.platform.providers.local import LocalProcess, LocalProvider, WorkerLaunch
from runpod_flash.platform.store import Store

logger = logging.getLogger("runpod_flash.platform")

WORKER_START_TIMEOUT_S = float(os.environ.get("FLASH_WORKER_START_TIMEOUT", "60"))
REAP_INTERVAL_S = 0.5
LOG_TAIL_LINES = 20


class NoWorkerAvailable(Exception):
    """No worker became ready in time; the gateway answers 503 with this text."""


class EndpointFailed(Exception):
    """The endpoint cannot run (environment build failed, workers crash on start)."""


@dataclass(eq=False)
class Worker:
    id: str
    endpoint_id: str
    log_path: Path
    gpus: list[str]
    state: str = "starting"  # starting -> ready -> stopping -> stopped | dead
    port: int | None = None
    process: LocalProcess | None = None
    in_flight: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "pid": self.process.pid if self.process else None,
            "port": self.port,
            "in_flight": self.in_flight,
            "gpus": self.gpus,
            "log": str(self.log_path),
        }


@dataclass(eq=False)
class Endpoint:
    id: str
    name: str
    kind: str
    spec: dict[str, Any]
    status: str = "building"  # building -> ready | failed
    python: str | None = None
    error: str | None = None
    warning: str | None = None
    progress: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    workers: dict[str, Worker] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_start_failure: str | None = None

    def notify(self) -> None:
        """Wake everyone waiting for a worker state change on this endpoint."""
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.state in ("starting", "ready")]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "type": self.spec.get("type", "LB"),
            "status": self.status,
            "error": self.error,
            "warning": self.warning,
            "progress": list(self.progress),
            "path": f"/ep/{self.id}",
            "workersMin": self.spec.get("workersMin", 0),
            "workersMax": self.spec.get("workersMax", 1),
            "workers": [w.summary() for w in self.workers.values()],
        }


def live_endpoint_id(spec: dict[str, Any]) -> str:
    """Same resource config and environment → same live endpoint, from any caller."""
    slug = re.sub(r"[^a-z0-9-]+", "-", str(spec.get("name", "endpoint")).lower()).strip("-")
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    return f"live-{slug or 'endpoint'}-{digest}"


class Supervisor:
    def __init__(
        self, store: Store, platform_url: str, token: str, gpus: GpuAllocator
    ) -> None:
        self.store = store
        self.platform_url = platform_url
        self.token = token
        self.gpus = gpus
        self.provider = LocalProvider()
        self.endpoints: dict[str, Endpoint] = {}
        self._workers: dict[str, Worker] = {}
        self._create_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.store.mark_all_workers_gone()
        self._reaper = asyncio.create_task(self._reap_forever())

    async def shutdown(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        await asyncio.gather(
            *(self._stop_worker(w) for w in list(self._workers.values())), return_exceptions=True
        )
        for task in list(self._tasks):
            task.cancel()

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- endpoints --------------------------------------------------------------------------

    async def ensure_live_endpoint(self, spec: dict[str, Any]) -> Endpoint:
        """Create the live endpoint for a resource on first use; later calls get the same one."""
        endpoint_id = live_endpoint_id(spec)
        lock = self._create_locks.setdefault(endpoint_id, asyncio.Lock())
        async with lock:
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is not None and endpoint.status != "failed":
                return endpoint
            endpoint = Endpoint(endpoint_id, str(spec["name"]), "live", spec)
            if not spec.get("cpu") and int(spec.get("gpuCount", 0)) > 0 and not self.gpus.gpus:
                endpoint.warning = (
                    f"No GPU found on this machine: GPU resource '{endpoint.name}' runs on "
                    "the CPU. Use a Cpu* resource class to silence this warning."
                )
            self.endpoints[endpoint_id] = endpoint
            self.store.save_endpoint(endpoint_id, endpoint.name, "live", spec)
            self._spawn_task(self._prepare(endpoint))
            return endpoint

    async def _prepare(self, endpoint: Endpoint) -> None:
        spec = endpoint.spec
        try:
            endpoint.python = await ensure_environment(
                spec.get("python") or "python3",
                list(spec.get("dependencies") or []),
                list(spec.get("system_dependencies") or []),
                config.envs_dir(),
                endpoint.progress.append,
            )
        except DependencyInstallError as exc:
            endpoint.status, endpoint.error = "failed", str(exc)
        except Exception as exc:  # a bug or an OS problem; say so, never leave callers waiting
            logger.exception("preparing endpoint %s failed", endpoint.id)
            endpoint.status = "failed"
            endpoint.error = f"Could not prepare endpoint '{endpoint.name}': {exc}"
        else:
            endpoint.status = "ready"
            self._ensure_minimum(endpoint)
        endpoint.notify()

    async def remove_endpoint(self, endpoint_id: str) -> bool:
        endpoint = self.endpoints.pop(endpoint_id, None)
        if endpoint is None:
            return False
        self.store.delete_endpoint(endpoint_id)
        await asyncio.gather(*(self._stop_worker(w) for w in list(endpoint.workers.values())))
        return True

    # -- workers ----------------------------------------------------------------------------

    def _ensure_minimum(self, endpoint: Endpoint) -> None:
        missing = int(endpoint.spec.get("workersMin", 0)) - len(endpoint.live_workers())
        for _ in range(max(0, missing)):
            self._start_worker(endpoint)

    def _start_worker(self, endpoint: Endpoint) -> Worker | None:
        try:
            gpus = self.gpus.allocate(endpoint.name, 0 if endpoint.spec.get("cpu")
                                      else int(endpoint.spec.get("gpuCount", 0)))
        except GpuRequestError as exc:
            endpoint.status, endpoint.error = "failed", str(exc)
            endpoint.notify()
            return None
        worker_id = f"w-{uuid.uuid4().hex[:10]}"
        log_path = config.logs_dir() / endpoint.id / f"{worker_id}.log"
        worker = Worker(worker_id, endpoint.id, log_path, gpus)
        endpoint.workers[worker_id] = worker
        self._workers[worker_id] = worker
        self.store.save_worker(worker_id, endpoint.id, None, "starting", str(log_path))
        self._spawn_task(self._run_worker(endpoint, worker))
        return worker

    def _worker_env(self, endpoint: Endpoint, worker: Worker) -> dict[str, str]:
        env = {str(k): str(v) for k, v in (endpoint.spec.get("env") or {}).items()}
        env.update({
            config.ENV_PLATFORM_URL: self.platform_url,
            config.ENV_PLATFORM_TOKEN: self.token,
            config.ENV_WORKER_ID: worker.id,
            config.ENV_ENDPOINT_ID: endpoint.id,
            "FLASH_RESOURCE_NAME": endpoint.name,
            "CUDA_VISIBLE_DEVICES": ",".join(worker.gpus),
        })
        return env

    async def _run_worker(self, endpoint: Endpoint, worker: Worker) -> None:
        """Start one worker and watch it until it exits; failures are visible, never silent."""
        launch = WorkerLaunch(
            worker.id, endpoint.python or "python3", self._worker_env(endpoint, worker),
            worker.log_path, endpoint.spec.get("cwd") or str(config.flash_home()),
        )
        try:
            worker.process = await self.provider.start(launch)
        except OSError as exc:
            endpoint.last_start_failure = f"cannot start worker process: {exc}"
            self._forget(endpoint, worker, "dead")
            return
        self.store.save_worker(worker.id, endpoint.id, worker.process.pid, "starting",
                               str(worker.log_path))
        try:
            code = await asyncio.wait_for(
                asyncio.shield(worker.process.exited), WORKER_START_TIMEOUT_S
            )
        except asyncio.TimeoutError:
            if worker.state == "starting":
                endpoint.last_start_failure = (
                    f"worker {worker.id} was not ready after {WORKER_START_TIMEOUT_S:.0f}s"
                )
                await worker.process.stop(grace_s=1)
            code = await worker.process.exited
        if worker.state == "starting":
            endpoint.last_start_failure = endpoint.last_start_failure or (
                f"worker {worker.id} exited with code {code} before it was ready; "
                f"last log lines:\n{self.log_tail(worker)}"
            )
        elif worker.state != "stopping":
            logger.warning("worker %s of %s exited with code %s", worker.id, endpoint.id, code)
        self._forget(endpoint, worker, "stopped" if worker.state == "stopping" else "dead")

    def _forget(self, endpoint: Endpoint, worker: Worker, final_state: str) -> None:
        worker.state = final_state
        endpoint.workers.pop(worker.id, None)
        self._workers.pop(worker.id, None)
        self.gpus.release(worker.gpus)
        self.store.update_worker(worker.id, final_state)
        endpoint.notify()

    def mark_ready(self, worker_id: str, port: int) -> bool:
        worker = self._workers.get(worker_id)
        if worker is None or worker.state != "starting":
            return False
        worker.state, worker.port = "ready", port
        worker.last_active = time.monotonic()
        self.store.update_worker(worker_id, "ready", port)
        endpoint = self.endpoints.get(worker.endpoint_id)
        if endpoint:
            endpoint.last_start_failure = None
            endpoint.notify()
        return True

    async def _stop_worker(self, worker: Worker) -> None:
        if worker.state in ("stopped", "dead"):
            return
        worker.state = "stopping"
        if worker.process is not None:
            await worker.process.stop()

    def _begin_stop(self, worker: Worker) -> None:
        """Take a worker out of routing now and stop it in the background."""
        if worker.state in ("starting", "ready"):
            worker.state = "stopping"
            if worker.process is not None:
                self._spawn_task(worker.process.stop())

    def log_tail(self, worker: Worker, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = worker.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    # -- routing ----------------------------------------------------------------------------

    async def acquire(self, endpoint: Endpoint, wait_s: float) -> Worker:
        """A ready worker with the fewest requests in flight; starts one if there is none."""
        deadline = time.monotonic() + wait_s
        while True:
            if endpoint.status == "failed":
                raise EndpointFailed(endpoint.error or "endpoint failed")
            if endpoint.status == "ready":
                worker = self._pick(endpoint)
                if worker is not None:
                    worker.in_flight += 1
                    return worker
                if not any(w.state == "starting" for w in endpoint.workers.values()):
                    if endpoint.last_start_failure and not endpoint.live_workers():
                        failure, endpoint.last_start_failure = endpoint.last_start_failure, None
                        raise EndpointFailed(f"Endpoint '{endpoint.name}': {failure}")
                    if self._start_worker(endpoint) is None:
                        continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoWorkerAvailable(
                    f"no workers available for endpoint '{endpoint.name}' after {wait_s:.0f}s"
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(endpoint.changed.wait(), remaining)

    def _pick(self, endpoint: Endpoint) -> Worker | None:
        ready = [w for w in endpoint.workers.values() if w.state == "ready"]
        if not ready:
            return None
        best = min(ready, key=lambda w: w.in_flight)
        per_worker = max(1, int(endpoint.spec.get("scalerValue", 4)))
        if (
            best.in_flight >= per_worker
            and len(endpoint.live_workers()) < int(endpoint.spec.get("workersMax", 1))
            and not any(w.state == "starting" for w in endpoint.workers.values())
        ):
            self._start_worker(endpoint)  # scale out; this request still goes to `best`
        return best

    def release(self, worker: Worker) -> None:
        worker.in_flight -= 1
        worker.last_active = time.monotonic()

    def report_unreachable(self, worker: Worker) -> None:
        """The gateway could not connect: take the worker out of routing and stop it."""
        self._begin_stop(worker)

    # -- housekeeping -----------------------------------------------------------------------

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                self._reap_once()
            except Exception:  # keep the loop alive; a bug here must not stop reaping
                logger.exception("reaper pass failed")

    def _reap_once(self) -> None:
        now = time.monotonic()
        for endpoint in self.endpoints.values():
            if endpoint.status != "ready":
                continue
            idle_timeout = float(endpoint.spec.get("idleTimeout", 60))
            keep = int(endpoint.spec.get("workersMin", 0))
            for worker in sorted(endpoint.live_workers(), key=lambda w: w.last_active):
                if len(endpoint.live_workers()) <= keep:
                    break
                if (
                    worker.state == "ready"
                    and worker.in_flight == 0
                    and now - worker.last_active > idle_timeout
                ):
                    logger.info("stopping idle worker %s of %s", worker.id, endpoint.id)
                    self._begin_stop(worker)
            if endpoint.last_start_failure is None:
                self._ensure_minimum(endpoint)

    def status(self) -> list[dict[str, Any]]:
        return [endpoint.summary() for endpoint in self.endpoints.values()]
