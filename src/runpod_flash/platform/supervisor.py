"""Endpoints and their workers: created, deployed, kept warm, stopped when unused, removed.

The supervisor is the platform's one view of endpoints; it is made of parts with one job
each, which the gateway and the APIs use directly:

- `fleet` (platform.fleet): starting, watching and stopping workers through the provider;
- `router` (platform.routing): which worker takes a request;
- `health` (platform.health): `/ping` checks, replacing unhealthy workers;
- `presence` (platform.presence): queue workers calling in;
- `rollouts` (platform.rollout): zero-downtime deploys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from runpod_flash.platform.autoscaler import Load
from runpod_flash.platform.credentials import Credentials
from runpod_flash.platform.endpoints import Endpoint, live_endpoint_id
from runpod_flash.platform.environments import DependencyInstallError
from runpod_flash.platform.fleet import Fleet
from runpod_flash.platform.health import Health
from runpod_flash.platform.launch import prepare_environment
from runpod_flash.platform.presence import Presence
from runpod_flash.platform.providers.base import PlacementError, Provider, Resources
from runpod_flash.platform.rollout import DeployFailed, Rollouts, deployed_id
from runpod_flash.platform.routing import Router
from runpod_flash.platform.store import Store
from runpod_flash.platform.volumes import VolumeRefused, Volumes

logger = logging.getLogger("runpod_flash.platform")

REAP_INTERVAL_S = 0.5
LIVE_WARM_TTL_S = float(os.environ.get("FLASH_LIVE_WARM_TTL", "3600"))

__all__ = ["DeployFailed", "Supervisor"]


class QueueSide(Protocol):
    """What the supervisor needs of the job queue (platform.jobs.JobQueue)."""

    def worker_gone(self, worker_id: str) -> None: ...
    def release_worker(self, worker_id: str) -> None: ...
    def load(self, endpoint_id: str) -> Load: ...
    def health(self, endpoint_id: str) -> dict[str, int]: ...


class Supervisor:
    def __init__(self, store: Store, platform_url: str, token: str, provider: Provider) -> None:
        self.store = store
        self.platform_url = platform_url
        self.token = token
        self.provider = provider
        self.volumes = Volumes()
        self.credentials = Credentials()  # each worker's token and gateway secret
        self.fleet = Fleet(store, provider, self.credentials, self.volumes, platform_url)
        self.endpoints: dict[str, Endpoint] = self.fleet.endpoints
        self.router = Router(self.fleet)
        self.health = Health(self.fleet)
        self.presence = Presence(self.fleet)
        self.rollouts = Rollouts(self.fleet, self._prepare_deployed, self._gpu_warning)
        # (endpoint id) -> its job counts, the Runpod `/health` shape: queue traffic is jobs
        self.queue_health: Callable[[str], dict[str, int]] = lambda endpoint_id: {}
        self._housekeeping: asyncio.Task[None] | None = None

    deployed_id = staticmethod(deployed_id)

    def connect_queue(self, queue: QueueSide) -> None:
        """The job queue learns when workers go; the autoscaler reads queue load."""
        self.fleet.on_worker_exit = queue.worker_gone
        self.fleet.on_worker_draining = queue.release_worker
        self.fleet.queue_load = queue.load
        self.queue_health = queue.health

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Stop workers an earlier run left (after kill -9), bring deployed endpoints back."""
        for pid, start in self.store.unfinished_workers():
            self.provider.reclaim(pid, start)
        self.store.mark_all_workers_gone()
        for row in self.store.endpoints():
            if row["kind"] != "deployed":
                self.store.delete_endpoint(row["id"])
                continue
            endpoint = Endpoint(row["id"], row["name"], "deployed", row["spec"],
                                deployed_at=row["updated_at"])
            self.endpoints[endpoint.id] = endpoint
            self.fleet.spawn(self._prepare_live(endpoint))
        self._housekeeping = asyncio.create_task(self._housekeep_forever())

    async def shutdown(self) -> None:
        """Drain and stop every worker (in-flight requests finish, bounded)."""
        if self._housekeeping:
            self._housekeeping.cancel()
        await self.fleet.stop_all()
        self.health.close()

    # -- endpoints --------------------------------------------------------------------------

    async def ensure_live_endpoint(self, spec: dict[str, Any]) -> Endpoint:
        """Create the live endpoint for a resource on first use; later calls get the same one."""
        endpoint_id = live_endpoint_id(spec)
        async with self.fleet.lock(endpoint_id):
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is not None and endpoint.status != "failed":
                endpoint.last_used = time.monotonic()
                return endpoint
            endpoint = Endpoint(endpoint_id, str(spec["name"]), "live", spec)
            self.endpoints[endpoint_id] = endpoint
            self.store.save_endpoint(endpoint_id, endpoint.name, "live", spec)
            self.fleet.spawn(self._prepare_live(endpoint))
            return endpoint

    async def deploy(
        self, spec: dict[str, Any], progress: Callable[[str], None]
    ) -> tuple[Endpoint, str]:
        """Create or update a deployed endpoint (see platform.rollout)."""
        return await self.rollouts.deploy(spec, progress)

    async def remove_endpoint(self, endpoint_id: str) -> bool:
        """Undeploy: stop routing to it at once, let in-flight requests finish, then stop."""
        async with self.fleet.lock(endpoint_id):
            endpoint = self.endpoints.pop(endpoint_id, None)
            if endpoint is None:
                return False
            self.store.delete_endpoint(endpoint_id)
            self.store.forget_versions(endpoint_id)  # nothing is left to roll back
            await self.fleet.drain_all(endpoint)
        self.fleet.forget_endpoint(endpoint_id)
        return True

    async def remove_live_endpoints(self) -> list[str]:
        """`flash undeploy --live`: every live endpoint goes (in-flight work finishes)."""
        ids = [e.id for e in list(self.endpoints.values()) if e.kind == "live"]
        removed = await asyncio.gather(*(self.remove_endpoint(i) for i in ids))
        return [endpoint_id for endpoint_id, done in zip(ids, removed, strict=True) if done]

    def _gpu_warning(self, spec: dict[str, Any]) -> str | None:
        if not spec.get("cpu") and int(spec.get("gpuCount", 0)) > 0 and \
                not self.provider.gpus():
            return (
                f"No GPU found on this machine: GPU resource '{spec['name']}' runs on "
                "the CPU. Use a Cpu* resource class to silence this warning."
            )
        return None

    async def _prepare_deployed(self, spec: dict[str, Any], progress: Callable[[str], None]
                                ) -> str:
        try:
            self.provider.check(Resources.of(spec), str(spec["name"]))
            await self.volumes.prepare(spec)
            return await prepare_environment(spec, progress,
                                             gpus_present=bool(self.provider.gpus()))
        except (DependencyInstallError, VolumeRefused, PlacementError) as exc:
            raise DeployFailed(str(exc)) from None

    async def _prepare_live(self, endpoint: Endpoint) -> None:
        """Build the endpoint's environment, then start its `workersMin` workers."""
        endpoint.warning = self._gpu_warning(endpoint.spec)
        try:
            endpoint.python = await self._prepare_deployed(endpoint.spec,
                                                           endpoint.progress.append)
        except DeployFailed as exc:
            endpoint.status, endpoint.error = "failed", str(exc)
        except Exception as exc:  # a bug or an OS problem; say so, never leave callers waiting
            logger.exception("preparing endpoint %s failed", endpoint.id)
            endpoint.status = "failed"
            endpoint.error = f"Could not prepare endpoint '{endpoint.name}': {exc}"
        else:
            endpoint.status = "ready"
            self.fleet.scale(endpoint)
        endpoint.notify()

    # -- housekeeping -----------------------------------------------------------------------

    async def _housekeep_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                self.housekeep_once()
            except Exception:  # keep the loop alive; a bug here must not stop it
                logger.exception("housekeeping pass failed")

    def housekeep_once(self) -> None:
        """Idle workers stop (down to workersMin), unused live endpoints go, the autoscaler
        tops endpoints up, and workers' health is checked when due."""
        now = time.monotonic()
        for endpoint in list(self.endpoints.values()):
            if self._unused_live(endpoint, now):
                logger.info("removing live endpoint %s: unused for %.0fs", endpoint.id,
                            _unused_after(endpoint))
                self.fleet.spawn(self.remove_endpoint(endpoint.id))
                continue
            if endpoint.status != "ready":
                continue
            self._stop_idle_workers(endpoint, now)
            self.fleet.scale(endpoint)
        self.health.check_due()

    def _stop_idle_workers(self, endpoint: Endpoint, now: float) -> None:
        idle_timeout = _idle_timeout(endpoint)
        keep = int(endpoint.spec.get("workersMin", 0))
        for worker in sorted(endpoint.live_workers(), key=lambda w: w.last_active):
            if len(endpoint.live_workers()) <= keep:
                break
            if worker.state == "ready" and worker.in_flight == 0 and \
                    now - worker.last_active > idle_timeout:
                logger.info("stopping idle worker %s of %s", worker.id, endpoint.id)
                self.fleet.begin_stop(worker)

    def _unused_live(self, endpoint: Endpoint, now: float) -> bool:
        """A live endpoint no caller used for its idle timeout (workers and entry go: a day
        of scripts leaves no trail); the next call provisions it again. One that keeps
        `workersMin` warm workers keeps them for LIVE_WARM_TTL_S of disuse."""
        if endpoint.kind != "live" or endpoint.waiting or endpoint.status == "building":
            return False
        workers = endpoint.workers.values()
        if any(w.in_flight or w.state == "starting" for w in workers):
            return False
        if endpoint.spec.get("type") == "QB":
            load = self.fleet.queue_load(endpoint.id)
            if load.busy or load.waiting:
                return False
        last = max([endpoint.last_used, *(w.last_active for w in workers)])
        return now - last > _unused_after(endpoint)

    def status(self) -> list[dict[str, Any]]:
        summaries = []
        for endpoint in self.endpoints.values():
            summary = endpoint.summary()
            if endpoint.spec.get("type") == "QB":
                load = self.fleet.queue_load(endpoint.id)
                summary["stats"].update(queued=load.waiting, running=load.busy,
                                        jobs=self.queue_health(endpoint.id))
            summaries.append(summary)
        return summaries


def _idle_timeout(endpoint: Endpoint) -> float:
    return float(endpoint.spec.get("idleTimeout", 60))


def _unused_after(endpoint: Endpoint) -> float:
    """How long a live endpoint stays without callers."""
    if int(endpoint.spec.get("workersMin", 0)) > 0:
        return max(LIVE_WARM_TTL_S, _idle_timeout(endpoint))
    return _idle_timeout(endpoint)
