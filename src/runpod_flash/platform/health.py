"""Whether workers are healthy: a starting worker takes traffic once `/ping` answers 200;
HTTP workers must keep answering `/ping`, queue workers must keep calling in; an unhealthy
one is replaced."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from runpod_flash.http.aio import ConnectionPool, Timeouts
from runpod_flash.http.errors import ResponseTimeout
from runpod_flash.platform.credentials import GATEWAY_SECRET_HEADER
from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.fleet import Fleet

logger = logging.getLogger("runpod_flash.platform")

PING_CONFIRM_S = 10.0
HEALTH_INTERVAL_S = float(os.environ.get("FLASH_HEALTH_INTERVAL", "2"))
PING_TIMEOUT_S = 2.0
PING_TIMEOUTS = Timeouts(connect=PING_TIMEOUT_S, first_byte=PING_TIMEOUT_S, idle=PING_TIMEOUT_S)
FAILED_PINGS_TO_REPLACE = 2
BUSY_PING_GRACE_S = 10.0  # unanswered pings a busy, running worker is forgiven
QUEUE_WORKER_SILENCE_S = 15.0  # queue workers ping every 2 s


class Health:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._probe = ConnectionPool()  # `/ping` on the workers
        self._unanswered_since: dict[str, float] = {}  # worker id -> first unanswered /ping
        self._next_check = 0.0

    def close(self) -> None:
        self._probe.close()

    async def _ping_status(self, worker: Worker) -> int:
        """`/ping`'s status; it carries the gateway secret (workers answer only the platform)."""
        status, _, _ = await self._probe.fetch(
            worker.host, worker.port or 0, "GET", "/ping",
            [(GATEWAY_SECRET_HEADER, worker.gateway_secret)], b"", PING_TIMEOUTS,
        )
        return status

    # -- starting ---------------------------------------------------------------------------

    def mark_ready(self, worker_id: str, port: int) -> bool:
        """A worker reports it is serving; it takes traffic once `/ping` says 200."""
        worker = self._fleet.workers.get(worker_id)
        if worker is None or worker.state != "starting":
            return False
        worker.port = port
        self._fleet.spawn(self._confirm_ready(worker))
        return True

    async def _confirm_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + PING_CONFIRM_S
        status: int | str = "no answer"
        while worker.state == "starting" and time.monotonic() < deadline:
            try:
                status = await self._ping_status(worker)
            except OSError as exc:
                status = str(exc)
            if status == 200:
                break
            await asyncio.sleep(0.02)
        endpoint = self._fleet.endpoints.get(worker.endpoint_id)
        if worker.state != "starting" or endpoint is None:
            return
        if status != 200:
            endpoint.last_start_failure = f"worker {worker.id} /ping answered {status}"
            self._fleet.begin_stop(worker)
            endpoint.notify()
            return
        worker.state = "ready"
        worker.last_active = time.monotonic()
        self._fleet.store.update_worker(worker.id, "ready", worker.port)
        self._fleet.started_fine(endpoint)

    # -- serving ----------------------------------------------------------------------------

    def suspect(self, worker: Worker) -> None:
        """A request could not reach this worker: check its health now, not at the next
        round. A failed connection alone proves nothing; `/ping` decides."""
        endpoint = self._fleet.endpoints.get(worker.endpoint_id)
        if endpoint is not None and worker.state == "ready":
            self._fleet.spawn(self._ping(endpoint, worker))

    def check_due(self) -> None:
        """Every HEALTH_INTERVAL_S: HTTP workers must answer /ping; queue workers must keep
        calling in."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + HEALTH_INTERVAL_S
        workers = self._fleet.workers
        for worker_id in [w for w in self._unanswered_since if w not in workers]:
            del self._unanswered_since[worker_id]
        for worker in list(workers.values()):
            endpoint = self._fleet.endpoints.get(worker.endpoint_id)
            if worker.state != "ready" or endpoint is None:
                continue
            if endpoint.spec.get("type") == "QB":
                if now - worker.last_seen > QUEUE_WORKER_SILENCE_S:
                    self.replace(endpoint, worker, f"silent for {now - worker.last_seen:.0f}s")
            else:
                self._fleet.spawn(self._ping(endpoint, worker))

    async def _ping(self, endpoint: Endpoint, worker: Worker) -> None:
        try:
            status: int | str = await self._ping_status(worker)
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
            self.replace(endpoint, worker, f"/ping answered {status}")

    def _busy_and_alive(self, worker: Worker) -> bool:
        """A handler blocking its event loop for a few seconds delays `/ping` too: a worker
        with requests in flight whose process runs is given BUSY_PING_GRACE_S before its
        unanswered pings count (a worker frozen for good is still replaced)."""
        if worker.in_flight <= 0 or worker.process is None or \
                worker.process.returncode is not None:
            return False
        since = self._unanswered_since.setdefault(worker.id, time.monotonic())
        return time.monotonic() - since < BUSY_PING_GRACE_S

    def replace(self, endpoint: Endpoint, worker: Worker, why: str) -> None:
        logger.warning("worker %s of %s is unhealthy (%s); replacing it", worker.id,
                       endpoint.id, why)
        endpoint.stats["worker_failures"] += 1
        self._fleet.kill(worker)
        self._fleet.scale(endpoint)
