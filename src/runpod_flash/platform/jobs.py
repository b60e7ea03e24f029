"""The durable job queue of queue-based endpoints.

Memory holds what the hot path needs: each unfinished job's state and, when small, its input.
The store holds every payload and every finished job (read back for `/status`), so memory
stays bounded by the per-endpoint cap however large the payloads and however many results are
kept. A submission is committed before it is acknowledged, so a platform killed with `kill -9`
loses no job; later transitions are written behind, off the event loop (a crash before one is
written runs the job again, as a crashed worker does). A result is accepted only from the
worker that holds the job, so no job completes twice. Deadlines wait in a heap: a sweep costs
what expires, not what is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runpod_flash import config
from runpod_flash.http.blocking import request
from runpod_flash.platform.autoscaler import Load
from runpod_flash.platform.store import Store

logger = logging.getLogger("runpod_flash.platform")

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 86_400_000
RESULT_RETENTION_S = 30 * 60
MAX_ATTEMPTS = 3  # runs of a job whose worker died before it is FAILED
RETRY_BACKOFF_S = (0.0, 0.5, 2.0)
LEASE_S = 30.0  # a worker that neither pings nor reports for this long has lost its jobs
WEBHOOK_ATTEMPTS = 3
WEBHOOK_BACKOFF_S = 2.0
WEBHOOK_TIMEOUT_S = 10.0
INLINE_INPUT_BYTES = 64 * 1024  # larger inputs are read from the store when taken
SWEEP_INTERVAL_S = 0.25
PRUNE_INTERVAL_S = 5.0
DEADLINE_SLACK = 10_000  # void deadlines tolerated before the heap is rebuilt
_STORED = object()  # a Job's input that is in the store only


class JobError(ValueError):
    """A request about a job that cannot be honoured; the message says why."""

    status = 400  # the queue API's answer


class QueueFull(JobError):
    """An endpoint has as many jobs waiting as it may (`FLASH_MAX_QUEUED_JOBS`)."""

    status = 429


@dataclass(eq=False)
class Job:
    id: str
    endpoint_id: str
    stored_input: Any  # the input, or _STORED when only the store has it
    store: Store
    policy: dict[str, Any] = field(default_factory=dict)
    webhook: str | None = None
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    worker_id: str | None = None
    attempts: int = 0
    retried: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    not_before: float = 0.0
    lease_until: float = 0.0
    stream: list[Any] = field(default_factory=list)
    streamed: int = 0  # chunks already returned by /stream
    affinity: str | None = None  # the worker that holds its class instance, while it serves
    turn: int = 0  # bumped by every transition: deadlines of an earlier turn are void
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def input(self) -> Any:
        """The job's input; a large one is read from the store when a worker takes it."""
        if self.stored_input is _STORED:
            return self.store.job_input(self.id)
        return self.stored_input

    @property
    def execution_timeout_s(self) -> float:
        return float(self.policy.get("executionTimeout") or DEFAULT_EXECUTION_TIMEOUT_MS) / 1000

    @property
    def ttl_s(self) -> float:
        return float(self.policy.get("ttl") or DEFAULT_TTL_MS) / 1000

    def view(self) -> dict[str, Any]:
        """The job as the Runpod API shows it."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_at is not None:
            body["delayTime"] = int((self.started_at - self.created_at) * 1000)
        if self.completed_at is not None and self.started_at is not None:
            body["executionTime"] = int((self.completed_at - self.started_at) * 1000)
        if self.worker_id:
            body["workerId"] = self.worker_id
        if self.status == "COMPLETED" or (self.status == "IN_PROGRESS" and self.output is not None):
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body

    def row(self) -> dict[str, Any]:
        """The store's row of the job, all but its input."""
        return {
            "id": self.id, "endpoint_id": self.endpoint_id, "status": self.status,
            "output": self.output, "error": self.error, "policy": self.policy,
            "webhook": self.webhook, "worker_id": self.worker_id, "attempts": self.attempts,
            "retried": self.retried, "created_at": self.created_at,
            "started_at": self.started_at, "completed_at": self.completed_at,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any], store: Store) -> Job:
        job = cls(row["id"], row["endpoint_id"], row.get("input", _STORED), store,
                  row["policy"], row["webhook"], row["status"], row["output"], row["error"],
                  row["worker_id"], row["attempts"], row["retried"], row["created_at"],
                  row["started_at"], row["completed_at"])
        if job.status in FINAL:
            job.done.set()
        return job


class EndpointQueue:
    """One endpoint's waiting jobs and the workers waiting for them."""

    def __init__(self) -> None:
        self.waiting: deque[Job] = deque()
        self.takers: deque[tuple[str, asyncio.Future[Job]]] = deque()
        self.stops: dict[str, set[str]] = {}  # worker id -> job ids to stop
        self.stop_waiters: dict[str, asyncio.Event] = {}
        self.counts = {"completed": 0, "failed": 0, "retried": 0}
        self.running = 0  # jobs IN_PROGRESS


class JobQueue:
    def __init__(
        self,
        store: Store,
        on_demand: Callable[[str, int], None],
        on_load: Callable[[str, int], None] = lambda worker_id, jobs: None,
        serving: Callable[[str], bool] = lambda worker_id: False,
    ) -> None:
        self.store = store
        self._serving = serving  # (worker id) -> whether it still takes jobs: affinity holds
        self._on_load = on_load  # (worker id, jobs it now holds): keeps routing and drain true
        self.on_finish: Callable[[Job], None] = lambda job: None
        self._held: dict[str, set[str]] = {}
        self._released: set[str] = set()  # draining or gone: they get no more jobs
        self.jobs: dict[str, Job] = {}  # unfinished ones, and finished ones with unread chunks
        self.queues: dict[str, EndpointQueue] = {}
        self._on_demand = on_demand  # (endpoint id, jobs waiting): work needs a worker
        self.max_queued = config.max_queued_jobs()
        self.max_finished = config.max_finished_jobs()
        # (monotonic deadline, sequence, kind, job id, stamp): see `_expire`
        self._deadlines: list[tuple[float, int, str, str, float]] = []
        self._sequence = itertools.count()
        self._next_prune = 0.0
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Reload unfinished jobs (those that were running are queued again); finished ones
        stay in the store, read when asked for."""
        for row in self.store.unfinished_jobs(INLINE_INPUT_BYTES):
            job = Job.from_row(row, self.store)
            self.jobs[job.id] = job
            self._expire_at_ttl(job)
            if job.status == "IN_PROGRESS":  # its worker died with the old platform
                self._requeue(job, "the platform restarted while it ran")
            else:
                self.queue(job.endpoint_id).waiting.append(job)
        for endpoint_id, queue in self.queues.items():
            if queue.waiting:
                self._on_demand(endpoint_id, len(queue.waiting))
        self._sweeper = asyncio.create_task(self._sweep_forever())

    def release_waiters(self) -> None:
        """Answer every long-poll now (the platform is stopping): workers get 204s."""
        for queue in self.queues.values():
            for _, taker in queue.takers:
                taker.cancel()
            queue.takers.clear()
            for event in queue.stop_waiters.values():
                event.set()

    def stop(self) -> None:
        self.release_waiters()
        if self._sweeper:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()

    def queue(self, endpoint_id: str) -> EndpointQueue:
        queue = self.queues.get(endpoint_id)
        if queue is None:
            queue = self.queues[endpoint_id] = EndpointQueue()
        return queue

    # -- client side ------------------------------------------------------------------------

    def submit(self, endpoint_id: str, body: dict[str, Any], sync: bool = False) -> Job:
        if not isinstance(body, dict) or "input" not in body:
            raise JobError('request body must be a JSON object with an "input" field')
        policy = body.get("policy") or {}
        if not isinstance(policy, dict):
            raise JobError('"policy" must be an object, e.g. {"executionTimeout": 60000}')
        for name in ("executionTimeout", "ttl"):
            value = policy.get(name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise JobError(f'policy "{name}" must be a positive number of milliseconds')
        webhook = body.get("webhook")
        if webhook is not None and not (isinstance(webhook, str) and webhook.startswith(
                ("http://", "https://"))):
            raise JobError('"webhook" must be an http(s) URL')
        affinity = body.get("affinity")
        if affinity is not None and not isinstance(affinity, str):
            raise JobError('"affinity" must be the id of a worker (a string)')
        self._check_room(endpoint_id)
        job_id = ("sync-" if sync else "") + str(uuid.uuid4())
        input_json = json.dumps(body["input"])
        kept = body["input"] if len(input_json) <= INLINE_INPUT_BYTES else _STORED
        job = Job(job_id, endpoint_id, kept, self.store, policy, webhook, affinity=affinity)
        self.store.commit_job(job.row(), input_json)
        self.jobs[job.id] = job
        self._expire_at_ttl(job)
        self._offer(job)
        return job

    def _check_room(self, endpoint_id: str) -> None:
        waiting = len(self.queue(endpoint_id).waiting)
        if waiting >= self.max_queued:
            raise QueueFull(
                f"endpoint '{endpoint_id}' already has {waiting} jobs waiting, its limit "
                f"({config.ENV_MAX_QUEUED_JOBS}); retry later, give it more workers "
                f"(workersMax), or raise {config.ENV_MAX_QUEUED_JOBS} on the platform"
            )

    def get(self, endpoint_id: str, job_id: str) -> Job:
        """A job by id: unfinished ones from memory, finished ones from the store."""
        job = self.jobs.get(job_id)
        if job is None:
            row = self.store.job(job_id)
            job = None if row is None else Job.from_row(row, self.store)
        if job is None or job.endpoint_id != endpoint_id:
            raise KeyError(job_id)
        return job

    def take_stream(self, job: Job) -> list[dict[str, Any]]:
        chunks = [{"output": chunk} for chunk in job.stream[job.streamed:]]
        job.streamed = len(job.stream)
        if job.status in FINAL and self.jobs.get(job.id) is job:
            del self.jobs[job.id]  # every chunk read: the store answers from now on
        return chunks

    def cancel(self, job: Job) -> None:
        if job.status in FINAL:
            return
        queue = self.queue(job.endpoint_id)
        if job.status == "IN_QUEUE":
            with contextlib.suppress(ValueError):
                queue.waiting.remove(job)
        elif job.worker_id:
            self._signal_stop(queue, job.worker_id, job.id)
        self._finish(job, "CANCELLED", error=None)

    def retry(self, job: Job) -> None:
        if job.status not in ("FAILED", "TIMED_OUT"):
            raise JobError(f"only FAILED or TIMED_OUT jobs can be retried; this one is "
                           f"{job.status}")
        self._check_room(job.endpoint_id)
        job.status, job.output, job.error = "IN_QUEUE", None, None
        job.worker_id, job.started_at, job.completed_at = None, None, None
        job.attempts, job.stream, job.streamed = 0, [], 0
        job.created_at, job.done = time.time(), asyncio.Event()
        job.retried += 1
        job.turn += 1
        if not self.store.commit_job(job.row()):
            raise JobError(f"job {job.id} is no longer kept (finished jobs are kept "
                           f"{RESULT_RETENTION_S // 60} minutes); submit it again")
        self.queue(job.endpoint_id).counts["retried"] += 1
        self.jobs[job.id] = job
        self._expire_at_ttl(job)
        self._offer(job)

    def purge(self, endpoint_id: str) -> int:
        queue = self.queue(endpoint_id)
        removed = list(queue.waiting)
        queue.waiting.clear()
        for job in removed:
            self._finish(job, "CANCELLED", error="removed by purge-queue")
        return len(removed)

    def load(self, endpoint_id: str) -> Load:
        """What the autoscaler needs: jobs running, waiting, and the oldest one's wait."""
        queue = self.queue(endpoint_id)
        oldest = time.time() - queue.waiting[0].created_at if queue.waiting else 0.0
        return Load(busy=queue.running, waiting=len(queue.waiting), oldest_wait_s=oldest)

    def health(self, endpoint_id: str) -> dict[str, int]:
        queue = self.queue(endpoint_id)
        return {"completed": queue.counts["completed"], "failed": queue.counts["failed"],
                "inProgress": queue.running, "inQueue": len(queue.waiting),
                "retried": queue.counts["retried"]}

    # -- worker side ------------------------------------------------------------------------

    def _may_take(self, job: Job, worker_id: str) -> bool:
        """A draining worker takes nothing. A job with an affinity waits for its worker while
        that worker takes jobs (a class instance lives there); once the worker is gone or
        draining, any worker may run it."""
        return worker_id not in self._released and (
            job.affinity is None or job.affinity == worker_id or not self._serving(job.affinity)
        )

    def _offer(self, job: Job) -> None:
        """Hand the job to a waiting worker, or queue it and ask for capacity."""
        queue = self.queue(job.endpoint_id)
        for entry in list(queue.takers):
            worker_id, taker = entry
            if taker.done():
                queue.takers.remove(entry)
            elif self._may_take(job, worker_id):
                queue.takers.remove(entry)
                self._assign(job, worker_id)
                taker.set_result(job)
                return
        queue.waiting.append(job)
        self._on_demand(job.endpoint_id, len(queue.waiting))

    def _hold(self, job: Job, worker_id: str, holding: bool) -> None:
        held = self._held.setdefault(worker_id, set())
        if holding == (job.id in held):
            return  # e.g. a job reloaded after a restart was never held in this run
        if holding:
            held.add(job.id)
        else:
            held.discard(job.id)
        self.queue(job.endpoint_id).running += 1 if holding else -1
        self._on_load(worker_id, len(held))

    def _assign(self, job: Job, worker_id: str) -> None:
        self._hold(job, worker_id, True)
        job.status, job.worker_id = "IN_PROGRESS", worker_id
        job.started_at = time.time()
        job.attempts += 1
        job.turn += 1
        clock = time.monotonic()
        job.lease_until = clock + LEASE_S
        self._expire_at(clock + job.execution_timeout_s, "timeout", job, job.turn)
        self._expire_at(job.lease_until, "lease", job, job.turn)
        self.store.update_job(job.row())

    def _ready_job(self, queue: EndpointQueue, worker_id: str) -> Job | None:
        now = time.monotonic()
        for job in queue.waiting:
            if job.not_before <= now and self._may_take(job, worker_id):
                queue.waiting.remove(job)
                return job
        return None

    async def take(self, endpoint_id: str, worker_id: str, count: int, wait_s: float
                   ) -> list[Job]:
        """Up to `count` jobs for a worker, waiting up to `wait_s` for the first one."""
        queue = self.queue(endpoint_id)
        jobs: list[Job] = []
        while len(jobs) < count:
            job = self._ready_job(queue, worker_id)
            if job is None:
                break
            self._assign(job, worker_id)
            jobs.append(job)
        if jobs or wait_s <= 0:
            return jobs
        taker: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        queue.takers.append((worker_id, taker))
        try:
            await asyncio.wait({taker}, timeout=wait_s)
        except asyncio.CancelledError:  # the worker hung up: give back what it was handed
            if taker.done() and not taker.cancelled():
                self._requeue(taker.result(), "its worker disconnected", count_attempt=False)
            taker.cancel()
            raise
        if taker.done() and not taker.cancelled():
            return [taker.result()]
        taker.cancel()  # timed out, or released because the platform is stopping
        return []

    def complete(self, endpoint_id: str, worker_id: str, job_id: str, body: Any) -> bool:
        """A worker's result; ignored (False) unless that worker holds the job right now."""
        job = self.jobs.get(job_id)
        if job is None or job.endpoint_id != endpoint_id or job.status != "IN_PROGRESS" \
                or job.worker_id != worker_id:
            return False
        if not isinstance(body, dict):
            body = {"output": body}
        if body.get("status") == "IN_PROGRESS":  # progress_update from the runpod SDK
            job.output = body.get("output")
            return True
        error = body.get("error")
        if error is not None:
            self._finish(job, "FAILED", error=error if isinstance(error, str) else
                         json.dumps(error))
        else:
            self._finish(job, "COMPLETED", output=body.get("output"))
        return True

    def add_stream(self, endpoint_id: str, worker_id: str, job_id: str, body: Any) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.endpoint_id != endpoint_id or job.worker_id != worker_id \
                or job.status != "IN_PROGRESS":
            return False
        job.stream.append(body.get("output") if isinstance(body, dict) else body)
        return True

    def heartbeat(self, worker_id: str, job_ids: list[str]) -> None:
        until = time.monotonic() + LEASE_S
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is not None and job.worker_id == worker_id and job.status == "IN_PROGRESS":
                job.lease_until = until

    async def stops_for(self, endpoint_id: str, worker_id: str, wait_s: float) -> list[str]:
        queue = self.queue(endpoint_id)
        event = queue.stop_waiters.setdefault(worker_id, asyncio.Event())
        if not queue.stops.get(worker_id):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), wait_s)
        event.clear()
        return sorted(queue.stops.pop(worker_id, set()))

    def release_worker(self, worker_id: str) -> None:
        """End a worker's long polls now (it is draining or gone): it gets no new job, not
        even from a take that is on its way, and jobs that waited for it (affinity) go to
        the other workers."""
        self._released.add(worker_id)
        for queue in self.queues.values():
            event = queue.stop_waiters.get(worker_id)
            if event is not None:
                event.set()
            for taker_worker, taker in list(queue.takers):
                if taker_worker == worker_id:
                    taker.cancel()
            self._wake_takers(queue)

    def worker_gone(self, worker_id: str) -> None:
        """Its process exited: every job it held runs again elsewhere (bounded)."""
        self.release_worker(worker_id)
        for job_id in list(self._held.get(worker_id, ())):
            job = self.jobs.get(job_id)
            if job is not None and job.worker_id == worker_id and job.status == "IN_PROGRESS":
                self._requeue(job, f"its worker {worker_id} died")
        self._held.pop(worker_id, None)
        self._released.discard(worker_id)
        for queue in self.queues.values():
            queue.stops.pop(worker_id, None)
            queue.stop_waiters.pop(worker_id, None)

    # -- transitions ------------------------------------------------------------------------

    def _requeue(self, job: Job, reason: str, count_attempt: bool = True) -> None:
        if not count_attempt:
            job.attempts -= 1
        if job.attempts >= MAX_ATTEMPTS:
            self._finish(job, "FAILED", error=(
                f"job failed after {job.attempts} attempts: {reason}; "
                "check the endpoint's logs (flash logs)"
            ))
            return
        logger.warning("requeueing job %s: %s", job.id, reason)
        if job.worker_id:
            self._hold(job, job.worker_id, False)
        job.status, job.worker_id, job.started_at = "IN_QUEUE", None, None
        job.turn += 1
        job.not_before = time.monotonic() + RETRY_BACKOFF_S[min(job.attempts,
                                                                len(RETRY_BACKOFF_S) - 1)]
        self._expire_at(job.not_before, "ready", job, job.turn)
        self.store.update_job(job.row())
        queue = self.queue(job.endpoint_id)
        queue.waiting.appendleft(job)
        self._on_demand(job.endpoint_id, len(queue.waiting))

    def _signal_stop(self, queue: EndpointQueue, worker_id: str, job_id: str) -> None:
        queue.stops.setdefault(worker_id, set()).add(job_id)
        queue.stop_waiters.setdefault(worker_id, asyncio.Event()).set()

    def _finish(self, job: Job, status: str, output: Any = None, error: str | None = None
                ) -> None:
        if job.worker_id and job.status == "IN_PROGRESS":
            self._hold(job, job.worker_id, False)
        job.status, job.output, job.error = status, output, error
        job.completed_at = time.time()
        if job.started_at is None:
            job.started_at = job.completed_at
        job.turn += 1
        counts = self.queue(job.endpoint_id).counts
        if status == "COMPLETED":
            counts["completed"] += 1
        elif status in ("FAILED", "TIMED_OUT"):
            counts["failed"] += 1
        self.store.update_job(job.row())
        if job.streamed < len(job.stream):  # kept until its chunks are read, or expire
            self._expire_at(time.monotonic() + RESULT_RETENTION_S, "forget", job, job.turn)
        else:
            self.jobs.pop(job.id, None)
        job.done.set()
        self.on_finish(job)
        if job.webhook:
            task = asyncio.create_task(self._send_webhook(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_webhook(self, job: Job) -> None:
        payload = json.dumps(job.view()).encode()
        for attempt in range(WEBHOOK_ATTEMPTS):
            try:
                await asyncio.to_thread(_post, job.webhook or "", payload)
                return
            except OSError as exc:
                logger.warning("webhook for job %s failed (attempt %d): %s", job.id,
                               attempt + 1, exc)
                await asyncio.sleep(WEBHOOK_BACKOFF_S * (2 ** attempt))

    # -- time-based transitions ---------------------------------------------------------------

    def _expire_at(self, when: float, kind: str, job: Job, stamp: float) -> None:
        heapq.heappush(self._deadlines, (when, next(self._sequence), kind, job.id, stamp))

    def _expire_at_ttl(self, job: Job) -> None:
        """The ttl counts from submission (wall clock, so it survives a restart)."""
        left = job.created_at + job.ttl_s - time.time()
        self._expire_at(time.monotonic() + left, "ttl", job, job.created_at)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                self.sweep()
            except Exception:
                logger.exception("job sweep failed")

    def sweep(self) -> None:
        """Act on the deadlines that passed; ask for capacity where jobs wait; now and then,
        prune finished jobs past their retention or over the count."""
        clock = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= clock:
            _, _, kind, job_id, stamp = heapq.heappop(self._deadlines)
            job = self.jobs.get(job_id)
            if job is not None:  # else it finished: its deadlines are void
                self._expire(kind, job, stamp, clock)
        if len(self._deadlines) > DEADLINE_SLACK + 4 * len(self.jobs):
            self._drop_void_deadlines()
        for endpoint_id, queue in self.queues.items():
            if queue.waiting:
                self._on_demand(endpoint_id, len(queue.waiting))
        if clock >= self._next_prune:
            self._next_prune = clock + PRUNE_INTERVAL_S
            self.store.prune_jobs(time.time() - RESULT_RETENTION_S, self.max_finished)

    def _expire(self, kind: str, job: Job, stamp: float, clock: float) -> None:
        """One deadline; a deadline of an earlier turn of the job (or of its earlier
        submission, for the ttl) no longer applies."""
        if kind == "ttl":
            if job.status not in FINAL and job.created_at == stamp:
                queue = self.queue(job.endpoint_id)
                if job.status == "IN_QUEUE":
                    with contextlib.suppress(ValueError):
                        queue.waiting.remove(job)
                elif job.worker_id:
                    self._signal_stop(queue, job.worker_id, job.id)
                self._finish(job, "TIMED_OUT", error=f"job expired: ttl of {job.ttl_s:g}s")
        elif job.turn != stamp:
            return
        elif kind == "timeout":
            if job.worker_id:
                self._signal_stop(self.queue(job.endpoint_id), job.worker_id, job.id)
            self._finish(job, "TIMED_OUT", error=(
                f"execution timeout: ran longer than {job.execution_timeout_s:g}s"
            ))
        elif kind == "lease":
            if clock < job.lease_until:  # it pinged meanwhile
                self._expire_at(job.lease_until, "lease", job, job.turn)
            else:
                self._requeue(job, f"its worker {job.worker_id} stopped reporting")
        elif kind == "ready":
            self._wake_takers(self.queue(job.endpoint_id))
        else:  # "forget": its chunks were never read
            del self.jobs[job.id]

    def _drop_void_deadlines(self) -> None:
        """Finished jobs leave their deadlines behind (a ttl is a day by default): drop them
        once they outnumber the live ones, so the heap stays the size of the work."""
        live = [entry for entry in self._deadlines
                if (job := self.jobs.get(entry[3])) is not None
                and (entry[4] == job.created_at if entry[2] == "ttl" else entry[4] == job.turn)]
        heapq.heapify(live)
        self._deadlines = live

    def _wake_takers(self, queue: EndpointQueue) -> None:
        """Jobs that became ready (retry backoff passed, affinity released) go to workers
        already waiting."""
        for entry in list(queue.takers):
            worker_id, taker = entry
            if taker.done():
                queue.takers.remove(entry)
                continue
            job = self._ready_job(queue, worker_id)
            if job is not None:
                queue.takers.remove(entry)
                self._assign(job, worker_id)
                taker.set_result(job)


def _post(url: str, payload: bytes) -> None:
    status, _ = request("POST", url, payload, {}, WEBHOOK_TIMEOUT_S)
    if status >= 300:
        raise OSError(f"webhook answered {status}")
