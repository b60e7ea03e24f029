"""Queue workers pull jobs, so the platform learns about them from their calls: the first
call marks a worker ready, every call proves it alive, its reports say how busy it is."""

from __future__ import annotations

import time

from runpod_flash.platform.fleet import Fleet


class Presence:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def worker_seen(self, worker_id: str) -> None:
        """A queue worker called in: it is up (its first call marks it ready)."""
        worker = self._fleet.workers.get(worker_id)
        if worker is None:
            return
        worker.last_seen = time.monotonic()
        if worker.state == "starting":
            worker.state = "ready"
            self._fleet.store.update_worker(worker_id, "ready")
            endpoint = self._fleet.endpoints.get(worker.endpoint_id)
            if endpoint:
                self._fleet.started_fine(endpoint)

    def serving(self, worker_id: str) -> bool:
        """Whether the worker still takes jobs (jobs for its class instances wait for it)."""
        worker = self._fleet.workers.get(worker_id)
        return worker is not None and worker.state in ("starting", "ready")

    def worker_busy(self, worker_id: str, jobs_in_progress: int) -> None:
        worker = self._fleet.workers.get(worker_id)
        if worker is not None:
            worker.in_flight = jobs_in_progress
            worker.last_active = time.monotonic()

    def worker_counts(self, endpoint_id: str) -> dict[str, int]:
        """The Runpod `/health` shape of an endpoint's workers."""
        endpoint = self._fleet.endpoints.get(endpoint_id)
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
        endpoint = self._fleet.endpoints.get(endpoint_id)
        if endpoint is not None:
            self._fleet.scale(endpoint)
