"""Endpoints and their workers: start, route, keep warm, roll over, drain, replace when dead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from runpod_flash import config
from runpod_flash.control import DEFAULT_ENVIRONMENT, ENV_ENVIRONMENT, deployed_endpoint_id
from runpod_flash.dependencies import APPROVED_KEY
from runpod_flash.http.aio import ConnectionPool, Timeouts
from runpod_flash.http.errors import ResponseTimeout
from runpod_flash.platform.autoscaler import Load, desired_workers
from runpod_flash.platform.credentials import GATEWAY_SECRET_HEADER, Credentials, Grant
from runpod_flash.platform.endpoints import (
    Endpoint,
    Worker,
    live_endpoint_id,
)
from runpod_flash.platform.environments import (
    DependencyInstallError,
    choose_torch_backend,
    ensure_environment,
)
from runpod_flash.platform.gpus import GpuAllocator, GpuRequestError
from runpod_flash.platform.providers.local import (
    RUNTIME_ARGS,
    LocalProvider,
    WorkerLaunch,
    kill_group,
    kill_leftover,
)
from runpod_flash.platform.store import Store
from runpod_flash.platform.volumes import VolumeRefused, Volumes

logger = logging.getLogger("runpod_flash.platform")


def _probe_headers(worker: Worker) -> list[tuple[bytes, bytes]]:
    """A health check carries the worker's gateway secret: workers answer only the platform."""
    return [(GATEWAY_SECRET_HEADER, worker.gateway_secret)]

WORKER_START_TIMEOUT_S = float(os.environ.get("FLASH_WORKER_START_TIMEOUT", "60"))
DRAIN_TIMEOUT_S = float(os.environ.get("FLASH_DRAIN_TIMEOUT", "30"))
PING_CONFIRM_S = 10.0
REAP_INTERVAL_S = 0.5
HEALTH_INTERVAL_S = float(os.environ.get("FLASH_HEALTH_INTERVAL", "2"))
PING_TIMEOUT_S = 2.0
PING_TIMEOUTS = Timeouts(connect=PING_TIMEOUT_S, first_byte=PING_TIMEOUT_S, idle=PING_TIMEOUT_S)
FAILED_PINGS_TO_REPLACE = 2
BUSY_PING_GRACE_S = 10.0  # unanswered pings a busy, running worker is forgiven
QUEUE_WORKER_SILENCE_S = 15.0  # queue workers ping every 2 s
MAX_BACKLOG = int(os.environ.get("FLASH_MAX_BACKLOG", "1000"))
MAX_START_BACKOFF_S = 30.0
IDLE_STOP_GRACE_S = 3.0
LOG_TAIL_LINES = 20


class NoWorkerAvailable(Exception):
    """No worker became ready in time; the gateway answers 503 with this text."""


class EndpointFailed(Exception):
    """The endpoint cannot run (environment build failed, workers crash on start)."""


class Backlogged(Exception):
    """Too many requests already wait for a worker; the gateway answers 429."""


class DeployFailed(Exception):
    """A new version could not start; the running version (if any) keeps serving."""


class Supervisor:
    def __init__(self, store: Store, platform_url: str, token: str, gpus: GpuAllocator) -> None:
        self.store = store
        self.platform_url = platform_url
        self.token = token
        self.gpus = gpus
        self.provider = LocalProvider(config.logs_dir())
        self.volumes = Volumes()
        self.endpoints: dict[str, Endpoint] = {}
        self._workers: dict[str, Worker] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._probe = ConnectionPool()  # health checks: `/ping` on the workers
        self.credentials = Credentials()  # each worker's token and gateway secret
        self.on_worker_exit: Callable[[str], None] = lambda worker_id: None
        self.on_worker_draining: Callable[[str], None] = lambda worker_id: None
        self.queue_load: Callable[[str], Load] = lambda endpoint_id: Load()
        # (endpoint id) -> its job counts, the Runpod `/health` shape: queue traffic is jobs
        self.queue_health: Callable[[str], dict[str, int]] = lambda endpoint_id: {}
        self._next_health_check = 0.0
        self._unanswered_since: dict[str, float] = {}  # worker id -> first unanswered /ping

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Stop workers an earlier run left (after kill -9), bring deployed endpoints back."""
        for pid, start in self.store.unfinished_workers():
            kill_leftover(pid, start)
        self.store.mark_all_workers_gone()
        for row in self.store.endpoints():
            if row["kind"] != "deployed":
                self.store.delete_endpoint(row["id"])
                continue
            endpoint = Endpoint(row["id"], row["name"], "deployed", row["spec"],
                                deployed_at=row["updated_at"])
            self.endpoints[endpoint.id] = endpoint
            self._spawn_task(self._prepare(endpoint))
        self._reaper = asyncio.create_task(self._reap_forever())

    async def shutdown(self) -> None:
        """Drain and stop every worker (in-flight requests finish, bounded)."""
        if self._reaper:
            self._reaper.cancel()
        await asyncio.gather(
            *(self._drain(w) for w in list(self._workers.values())), return_exceptions=True
        )
        for task in list(self._tasks):
            task.cancel()
        self._probe.close()
        self.provider.close()

    def _spawn_task(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _lock(self, endpoint_id: str) -> asyncio.Lock:
        return self._locks.setdefault(endpoint_id, asyncio.Lock())

    # -- endpoints --------------------------------------------------------------------------

    async def ensure_live_endpoint(self, spec: dict[str, Any]) -> Endpoint:
        """Create the live endpoint for a resource on first use; later calls get the same one."""
        endpoint_id = live_endpoint_id(spec)
        async with self._lock(endpoint_id):
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is not None and endpoint.status != "failed":
                return endpoint
            endpoint = Endpoint(endpoint_id, str(spec["name"]), "live", spec)
            self.endpoints[endpoint_id] = endpoint
            self.store.save_endpoint(endpoint_id, endpoint.name, "live", spec)
            self._spawn_task(self._prepare(endpoint))
            return endpoint

    def _gpu_warning(self, spec: dict[str, Any]) -> str | None:
        if not spec.get("cpu") and int(spec.get("gpuCount", 0)) > 0 and not self.gpus.gpus:
            return (
                f"No GPU found on this machine: GPU resource '{spec['name']}' runs on "
                "the CPU. Use a Cpu* resource class to silence this warning."
            )
        return None

    async def _environment(self, spec: dict[str, Any], progress: Callable[[str], None]) -> str:
        return await ensure_environment(
            spec.get("python") or "python3",
            list(spec.get("dependencies") or []),
            list(spec.get("system_dependencies") or []),
            config.envs_dir(),
            progress,
            torch_backend=choose_torch_backend(spec, gpus_present=bool(self.gpus.gpus)),
            approved_system_dependencies=list(spec.get(APPROVED_KEY) or []),
            endpoint=str(spec.get("name", "")),
        )

    async def _prepare(self, endpoint: Endpoint) -> None:
        """Build the endpoint's environment, then start its `workersMin` workers."""
        endpoint.warning = self._gpu_warning(endpoint.spec)
        try:
            await self.volumes.prepare(endpoint.spec)
            endpoint.python = await self._environment(endpoint.spec, endpoint.progress.append)
        except (DependencyInstallError, VolumeRefused) as exc:
            endpoint.status, endpoint.error = "failed", str(exc)
        except Exception as exc:  # a bug or an OS problem; say so, never leave callers waiting
            logger.exception("preparing endpoint %s failed", endpoint.id)
            endpoint.status = "failed"
            endpoint.error = f"Could not prepare endpoint '{endpoint.name}': {exc}"
        else:
            endpoint.status = "ready"
            self._scale(endpoint)
        endpoint.notify()

    async def deploy(
        self, spec: dict[str, Any], progress: Callable[[str], None]
    ) -> tuple[Endpoint, str]:
        """Create or update a deployed endpoint; returns it and "created|updated|unchanged".

        A new version must start one healthy worker before it takes traffic; then the old
        workers drain. If it cannot start, the running version keeps serving.
        """
        endpoint_id = self.deployed_id(spec)
        async with self._lock(endpoint_id):
            current = self.endpoints.get(endpoint_id)
            candidate = Endpoint(endpoint_id, str(spec["name"]), "deployed", spec)
            if current is not None and current.version == candidate.version \
                    and current.status == "ready":
                return current, "unchanged"
            if current is not None and current.kind != "deployed":
                raise DeployFailed(f"'{endpoint_id}' is a live endpoint; choose another name")
            owner = current.spec.get("app") if current is not None else None
            if owner and spec.get("app") and owner != spec["app"]:
                raise DeployFailed(
                    f"endpoint '{endpoint_id}' belongs to app '{owner}'; give resource "
                    f"'{spec['name']}' another name, or deploy with --app {owner}"
                )
            progress(f"{candidate.name}: preparing environment")
            try:
                await self.volumes.prepare(spec)
                python = await self._environment(spec, progress)
            except (DependencyInstallError, VolumeRefused) as exc:
                raise DeployFailed(str(exc)) from None
            endpoint = current or candidate
            if current is None:
                endpoint.status, endpoint.python = "building", python
                endpoint.warning = self._gpu_warning(spec)
                self.endpoints[endpoint_id] = endpoint
            progress(f"{candidate.name}: starting a worker of version {candidate.version}")
            canary = self._start_worker(endpoint, spec=spec, python=python,
                                        version=candidate.version)
            if canary is None or not await self._wait_ready(endpoint, canary):
                failure = endpoint.last_start_failure or "worker did not start"
                if current is None:
                    await self._discard(endpoint)
                else:  # the failure was the new version's; the running one is fine
                    endpoint.last_start_failure = None
                    endpoint.start_failures, endpoint.retry_start_at = 0, 0.0
                raise DeployFailed(f"{candidate.name}: the new version did not start: {failure}")
            old_workers = [w for w in endpoint.workers.values() if w.version != candidate.version]
            endpoint.use_spec(spec)
            endpoint.python = python
            endpoint.status, endpoint.error = "ready", None
            endpoint.deployed_at = time.time()
            endpoint.warning = self._gpu_warning(spec)
            self.store.save_endpoint(endpoint_id, endpoint.name, "deployed", spec)
            endpoint.notify()
            for worker in old_workers:
                self._spawn_task(self._drain(worker))
            self._scale(endpoint)
            return endpoint, "created" if current is None else "updated"

    @staticmethod
    def deployed_id(spec: dict[str, Any]) -> str:
        """A deployed spec's endpoint id, from its name and environment (never the
        platform's own environment variables)."""
        return deployed_endpoint_id(str(spec["name"]),
                                    str(spec.get("environment") or DEFAULT_ENVIRONMENT))

    async def _wait_ready(self, endpoint: Endpoint, worker: Worker) -> bool:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S + 5
        while worker.state == "starting" and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(endpoint.changed.wait(), deadline - time.monotonic())
        return worker.state == "ready"

    async def _discard(self, endpoint: Endpoint) -> None:
        self.endpoints.pop(endpoint.id, None)
        await asyncio.gather(*(self._drain(w) for w in list(endpoint.workers.values())))

    async def remove_endpoint(self, endpoint_id: str) -> bool:
        """Undeploy: stop routing to it at once, let in-flight requests finish, then stop."""
        async with self._lock(endpoint_id):
            endpoint = self.endpoints.pop(endpoint_id, None)
            if endpoint is None:
                return False
            self.store.delete_endpoint(endpoint_id)
            await asyncio.gather(*(self._drain(w) for w in list(endpoint.workers.values())))
            self.credentials.forget_endpoint(endpoint_id)
            return True

    # -- workers ----------------------------------------------------------------------------

    def _load(self, endpoint: Endpoint) -> Load:
        if endpoint.spec.get("type") == "QB":
            return self.queue_load(endpoint.id)
        busy = sum(w.in_flight for w in endpoint.workers.values() if w.state == "ready")
        return Load(busy=busy, waiting=endpoint.waiting)

    def _scale(self, endpoint: Endpoint) -> None:
        """Start workers up to what the autoscaler wants (paused during a crash loop)."""
        if endpoint.status != "ready" or time.monotonic() < endpoint.retry_start_at:
            return
        live = len(endpoint.live_workers())
        for _ in range(desired_workers(endpoint.spec, live, self._load(endpoint)) - live):
            if self._start_worker(endpoint) is None:
                return

    def _start_worker(
        self,
        endpoint: Endpoint,
        spec: dict[str, Any] | None = None,
        python: str | None = None,
        version: str | None = None,
    ) -> Worker | None:
        """Start a worker of the endpoint's current version (or of the one given)."""
        spec = spec or endpoint.spec
        try:
            gpus = self.gpus.allocate(
                endpoint.name, 0 if spec.get("cpu") else int(spec.get("gpuCount", 0))
            )
        except GpuRequestError as exc:
            endpoint.last_start_failure = str(exc)
            if endpoint.kind == "live":
                endpoint.status, endpoint.error = "failed", str(exc)
            endpoint.notify()
            return None
        worker_id = f"w-{uuid.uuid4().hex[:10]}"
        log_path = config.logs_dir() / endpoint.id / f"{worker_id}.log"
        worker = Worker(worker_id, endpoint.id, version or endpoint.version, log_path, gpus)
        peers = frozenset(path.rsplit("/", 1)[-1] for path in (spec.get("peers") or {}).values())
        grant = self.credentials.issue(worker_id, endpoint.id, endpoint.kind == "live", peers)
        worker.gateway_secret = grant.gateway_secret.encode()
        endpoint.stats["cold_starts"] += 1
        endpoint.workers[worker_id] = worker
        self._workers[worker_id] = worker
        self.store.save_worker(worker_id, endpoint.id, None, "starting", str(log_path))
        handler = spec.get("handler_file")
        launch = WorkerLaunch(
            worker.id, python or endpoint.python or "python3",
            self._worker_env(endpoint, worker, spec, grant), log_path,
            spec.get("app_dir") or spec.get("cwd") or str(config.flash_home()),
            ("-m", "runpod_flash.runtime.script", handler) if handler else RUNTIME_ARGS,
        )
        self._spawn_task(self._run_worker(endpoint, worker, launch))
        return worker

    def _worker_env(
        self, endpoint: Endpoint, worker: Worker, spec: dict[str, Any], grant: Grant
    ) -> dict[str, str]:
        """The worker's environment: its own token (never the platform's) and secret."""
        env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
        env.update({
            config.ENV_PLATFORM_URL: self.platform_url,
            config.ENV_PLATFORM_TOKEN: grant.token,
            config.ENV_GATEWAY_SECRET: grant.gateway_secret,
            config.ENV_WORKER_ID: worker.id,
            config.ENV_ENDPOINT_ID: endpoint.id,
            "FLASH_RESOURCE_NAME": endpoint.name,
            "CUDA_VISIBLE_DEVICES": ",".join(worker.gpus),
        })
        if spec.get("app_dir"):
            env["FLASH_APP_DIR"] = spec["app_dir"]
        if spec.get("peers"):
            env[config.ENV_PEER_ENDPOINTS] = json.dumps(spec["peers"])
        if spec.get("environment"):  # deployed calls from this worker address its own
            env[ENV_ENVIRONMENT] = str(spec["environment"])
            env["FLASH_APP"] = str(spec.get("app") or "")
        env.update(self.volumes.worker_env(spec))
        queued = spec.get("type") == "QB"
        env["FLASH_WORKER_MODE"] = ("queue-" if queued else "") + (
            "deployed" if spec.get("app_dir") else "live"
        )
        if queued:
            env.update(self._runpod_worker_env(endpoint, worker, grant.token))
        return env

    def _runpod_worker_env(self, endpoint: Endpoint, worker: Worker, env_token: str
                           ) -> dict[str, str]:
        """The variables a Runpod worker (ours or `runpod.serverless.start`) pulls jobs with."""
        base = f"{self.platform_url}/v2/{endpoint.id}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=local",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=local",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=local",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=local",
            "RUNPOD_AI_API_KEY": env_token,
            "RUNPOD_POD_ID": worker.id,
            "RUNPOD_ENDPOINT_ID": endpoint.id,
            "RUNPOD_PING_INTERVAL": "2000",
            "FLASH_JOB_CONCURRENCY": str(endpoint.spec.get("concurrency", 1)),
        }

    async def _run_worker(self, endpoint: Endpoint, worker: Worker, launch: WorkerLaunch) -> None:
        """Start one worker and watch it until it exits; failures are visible, never silent."""
        try:
            worker.process = await self.provider.start(launch)
        except OSError as exc:
            endpoint.last_start_failure = f"cannot start worker process: {exc}"
            self._forget(endpoint, worker, "dead")
            return
        self.store.save_worker(worker.id, endpoint.id, worker.process.pid, "starting",
                               str(worker.log_path), worker.process.start)
        try:
            code = await asyncio.wait_for(
                asyncio.shield(worker.process.exited), WORKER_START_TIMEOUT_S
            )
        except asyncio.TimeoutError:
            if worker.state == "starting":
                endpoint.last_start_failure = (
                    f"worker {worker.id} was not ready after {WORKER_START_TIMEOUT_S:.0f}s; "
                    f"last log lines:\n{self.log_tail(worker)}"
                )
                await worker.process.stop(grace_s=1)
            code = await worker.process.exited
        if worker.state == "starting":
            endpoint.last_start_failure = endpoint.last_start_failure or (
                f"worker {worker.id} exited with code {code} before it was ready; "
                f"last log lines:\n{self.log_tail(worker)}"
            )
            endpoint.start_failures += 1
            endpoint.stats["worker_failures"] += 1
            endpoint.retry_start_at = time.monotonic() + min(
                MAX_START_BACKOFF_S, 0.5 * 2 ** (endpoint.start_failures - 1)
            )
        elif worker.state not in ("stopping", "draining"):
            logger.warning("worker %s of %s exited with code %s", worker.id, endpoint.id, code)
        expected = worker.state in ("stopping", "draining")
        kill_group(worker.process.pid, worker.process.start)  # what it started dies with it
        self._forget(endpoint, worker, "stopped" if expected else "dead")

    def _forget(self, endpoint: Endpoint, worker: Worker, final_state: str) -> None:
        self.on_worker_exit(worker.id)
        self.credentials.revoke(worker.id)
        self._unanswered_since.pop(worker.id, None)
        worker.state = final_state
        endpoint.workers.pop(worker.id, None)
        self._workers.pop(worker.id, None)
        self.gpus.release(worker.gpus)
        self.store.update_worker(worker.id, final_state)
        endpoint.notify()

    def mark_ready(self, worker_id: str, port: int) -> bool:
        """A worker reports it is serving; it takes traffic once `/ping` says 200."""
        worker = self._workers.get(worker_id)
        if worker is None or worker.state != "starting":
            return False
        worker.port = port
        self._spawn_task(self._confirm_ready(worker))
        return True

    async def _confirm_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + PING_CONFIRM_S
        status: int | str = "no answer"
        while worker.state == "starting" and time.monotonic() < deadline:
            try:
                status, _, _ = await self._probe.fetch(
                    "127.0.0.1", worker.port or 0, "GET", "/ping", _probe_headers(worker), b"",
                    PING_TIMEOUTS
                )
            except OSError as exc:
                status = str(exc)
            if status == 200:
                break
            await asyncio.sleep(0.02)
        endpoint = self.endpoints.get(worker.endpoint_id)
        if worker.state != "starting" or endpoint is None:
            return
        if status != 200:
            endpoint.last_start_failure = f"worker {worker.id} /ping answered {status}"
            self._begin_stop(worker)
            endpoint.notify()
            return
        worker.state = "ready"
        worker.last_active = time.monotonic()
        self.store.update_worker(worker.id, "ready", worker.port)
        self._started_fine(endpoint)

    def _started_fine(self, endpoint: Endpoint) -> None:
        endpoint.last_start_failure = None
        endpoint.start_failures, endpoint.retry_start_at = 0, 0.0
        endpoint.notify()

    async def _drain(self, worker: Worker) -> None:
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

    def _begin_stop(self, worker: Worker) -> None:
        """Take a worker out of routing now and stop it in the background."""
        if worker.state in ("starting", "ready"):
            self._spawn_task(self._drain(worker))
            worker.state = "draining"

    def log_tail(self, worker: Worker, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = worker.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    # -- routing ----------------------------------------------------------------------------

    def try_acquire(self, endpoint: Endpoint) -> Worker | None:
        """The hot path: a ready worker at once, or None (then `acquire` waits for one)."""
        return self._pick(endpoint) if endpoint.status == "ready" else None

    async def acquire(
        self, endpoint: Endpoint, wait_s: float, avoid: Worker | None = None
    ) -> Worker:
        """A ready worker with the fewest requests in flight; waits (bounded) for one.

        `avoid` (one that just failed a request) is taken only when no other is ready.
        """
        deadline = time.monotonic() + wait_s
        while True:
            if endpoint.status == "failed":
                raise EndpointFailed(endpoint.error or "endpoint failed")
            if endpoint.status == "ready":
                worker = self._pick(endpoint, avoid)
                if worker is not None:
                    return worker
                self._fail_fast_in_crash_loop(endpoint)
            if endpoint.waiting >= MAX_BACKLOG:
                raise Backlogged(
                    f"endpoint '{endpoint.name}' has {endpoint.waiting} requests waiting for a "
                    "worker; retry later or raise workersMax"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoWorkerAvailable(
                    f"no workers available for endpoint '{endpoint.name}' after {wait_s:.0f}s"
                )
            endpoint.waiting += 1
            try:
                self._scale(endpoint)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(endpoint.changed.wait(), remaining)
            finally:
                endpoint.waiting -= 1

    def _fail_fast_in_crash_loop(self, endpoint: Endpoint) -> None:
        """Workers keep dying on start: say why now instead of making callers wait."""
        pause = endpoint.retry_start_at - time.monotonic()
        if endpoint.last_start_failure and pause > 0 and not endpoint.live_workers():
            raise EndpointFailed(
                f"Endpoint '{endpoint.name}': workers fail to start ({endpoint.start_failures} "
                f"in a row; next try in {pause:.1f}s): {endpoint.last_start_failure}"
            )

    def _pick(self, endpoint: Endpoint, avoid: Worker | None = None) -> Worker | None:
        best: Worker | None = None
        for worker in endpoint.workers.values():
            if worker.state == "ready" and worker.version == endpoint.version and (
                best is None or (best is avoid) or (
                    worker.in_flight < best.in_flight and worker is not avoid)
            ):
                best = worker
        if best is None:
            return None
        best.in_flight += 1
        if best.in_flight > int(endpoint.spec.get("scalerValue", 4)) and \
                len(endpoint.workers) < int(endpoint.spec.get("workersMax", 1)):
            self._scale(endpoint)  # busy: maybe more workers; this request still goes here
        return best

    def release(self, worker: Worker) -> None:
        worker.in_flight -= 1
        worker.last_active = time.monotonic()

    def suspect(self, worker: Worker) -> None:
        """A request could not reach this worker: check its health now, not at the next
        round. A failed connection alone proves nothing; `/ping` decides."""
        endpoint = self.endpoints.get(worker.endpoint_id)
        if endpoint is not None and worker.state == "ready":
            self._spawn_task(self._ping(endpoint, worker))

    def _kill(self, worker: Worker) -> None:
        """An unhealthy worker is stopped at once: its in-flight work cannot finish anyway."""
        if worker.state in ("starting", "ready", "draining"):
            worker.state = "stopping"
            self.on_worker_draining(worker.id)
            if worker.process is not None:
                self._spawn_task(worker.process.stop(grace_s=IDLE_STOP_GRACE_S))

    # -- queue endpoints: workers pull, so the platform learns about them from their calls --

    def worker_seen(self, worker_id: str) -> None:
        """A queue worker called in: it is up (its first call marks it ready)."""
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        worker.last_seen = time.monotonic()
        if worker.state == "starting":
            worker.state = "ready"
            self.store.update_worker(worker_id, "ready")
            endpoint = self.endpoints.get(worker.endpoint_id)
            if endpoint:
                self._started_fine(endpoint)

    def serving(self, worker_id: str) -> bool:
        """Whether the worker still takes jobs (jobs for its class instances wait for it)."""
        worker = self._workers.get(worker_id)
        return worker is not None and worker.state in ("starting", "ready")

    def worker_busy(self, worker_id: str, jobs_in_progress: int) -> None:
        worker = self._workers.get(worker_id)
        if worker is not None:
            worker.in_flight = jobs_in_progress
            worker.last_active = time.monotonic()

    def worker_counts(self, endpoint_id: str) -> dict[str, int]:
        endpoint = self.endpoints.get(endpoint_id)
        workers = list(endpoint.workers.values()) if endpoint else []
        ready = [w for w in workers if w.state == "ready"]
        return {
            "idle": sum(1 for w in ready if w.in_flight == 0),
            "running": sum(1 for w in ready if w.in_flight > 0),
            "initializing": sum(1 for w in workers if w.state == "starting"),
            "ready": len(ready),
            "throttled": 0,
            "unhealthy": 0,
        }

    def on_demand(self, endpoint_id: str, waiting: int) -> None:
        """Jobs are waiting: let the autoscaler add workers."""
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is not None:
            self._scale(endpoint)

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
        for endpoint in list(self.endpoints.values()):
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
            self._scale(endpoint)
        if now >= self._next_health_check:
            self._next_health_check = now + HEALTH_INTERVAL_S
            self._check_health()

    def _check_health(self) -> None:
        """HTTP workers must answer /ping; queue workers must keep calling in."""
        now = time.monotonic()
        for worker in list(self._workers.values()):
            if worker.state != "ready":
                continue
            endpoint = self.endpoints.get(worker.endpoint_id)
            if endpoint is None:
                continue
            if endpoint.spec.get("type") == "QB":
                if now - worker.last_seen > QUEUE_WORKER_SILENCE_S:
                    self._replace(endpoint, worker, f"silent for {now - worker.last_seen:.0f}s")
            else:
                self._spawn_task(self._ping(endpoint, worker))

    async def _ping(self, endpoint: Endpoint, worker: Worker) -> None:
        try:
            status, _, _ = await self._probe.fetch(
                "127.0.0.1", worker.port or 0, "GET", "/ping", _probe_headers(worker), b"",
                    PING_TIMEOUTS
            )
        except ResponseTimeout as exc:
            if self._busy_and_alive(worker):
                return
            status = repr(exc)
        except OSError as exc:
            status = repr(exc)
        if status == 200:
            worker.failed_pings = 0
            self._unanswered_since.pop(worker.id, None)
            return
        worker.failed_pings += 1
        if worker.failed_pings >= FAILED_PINGS_TO_REPLACE and worker.state == "ready":
            self._replace(endpoint, worker, f"/ping answered {status}")

    def _busy_and_alive(self, worker: Worker) -> bool:
        """A handler blocking its event loop for a few seconds delays `/ping` too: a worker
        with requests in flight whose process runs is given BUSY_PING_GRACE_S before its
        unanswered pings count (a worker frozen for good is still replaced)."""
        if worker.in_flight <= 0 or worker.process is None or \
                worker.process.returncode is not None:
            return False
        since = self._unanswered_since.setdefault(worker.id, time.monotonic())
        return time.monotonic() - since < BUSY_PING_GRACE_S

    def _replace(self, endpoint: Endpoint, worker: Worker, why: str) -> None:
        logger.warning("worker %s of %s is unhealthy (%s); replacing it", worker.id,
                       endpoint.id, why)
        endpoint.stats["worker_failures"] += 1
        self._kill(worker)
        self._scale(endpoint)

    def status(self) -> list[dict[str, Any]]:
        summaries = []
        for endpoint in self.endpoints.values():
            summary = endpoint.summary()
            if endpoint.spec.get("type") == "QB":
                load = self.queue_load(endpoint.id)
                summary["stats"].update(queued=load.waiting, running=load.busy,
                                        jobs=self.queue_health(endpoint.id))
            summaries.append(summary)
        return summaries
