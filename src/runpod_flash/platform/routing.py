"""Which worker takes a request: the ready one with the fewest in flight, waiting (bounded)
while workers start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.fleet import Fleet

MAX_BACKLOG = int(os.environ.get("FLASH_MAX_BACKLOG", "1000"))


class NoWorkerAvailable(Exception):
    """No worker became ready in time; the gateway answers 503 with this text."""


class EndpointFailed(Exception):
    """The endpoint cannot run (environment build failed, workers crash on start)."""


class Backlogged(Exception):
    """Too many requests already wait for a worker; the gateway answers 429."""


class Router:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

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
                _fail_fast_in_crash_loop(endpoint)
            if endpoint.waiting >= MAX_BACKLOG:
                raise Backlogged(
                    f"endpoint '{endpoint.name}' has {endpoint.waiting} requests waiting for a "
                    "worker; retry later or raise workersMax"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoWorkerAvailable(
                    f"no workers available for endpoint '{endpoint.name}' after {wait_s:g}s"
                )
            endpoint.waiting += 1
            try:
                self._fleet.scale(endpoint)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(endpoint.changed.wait(), remaining)
            finally:
                endpoint.waiting -= 1

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
            self._fleet.scale(endpoint)  # busy: maybe more workers; this request still goes here
        return best

    @staticmethod
    def release(worker: Worker) -> None:
        worker.in_flight -= 1
        worker.last_active = time.monotonic()


def _fail_fast_in_crash_loop(endpoint: Endpoint) -> None:
    """Workers keep dying on start: say why now instead of making callers wait."""
    pause = endpoint.retry_start_at - time.monotonic()
    if endpoint.last_start_failure and pause > 0 and not endpoint.live_workers():
        raise EndpointFailed(
            f"Endpoint '{endpoint.name}': workers fail to start ({endpoint.start_failures} "
            f"in a row; next try in {pause:.1f}s): {endpoint.last_start_failure}"
        )
