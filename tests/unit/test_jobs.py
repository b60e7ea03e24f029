"""The job queue's state machine: submit, take, complete, requeue, and worker affinity."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from runpod_flash.platform.jobs import MAX_ATTEMPTS, JobError, JobQueue
from runpod_flash.platform.store import Store


class Workers:
    """Which workers take jobs, as the supervisor would answer."""

    def __init__(self, *serving: str) -> None:
        self.serving = set(serving)

    def __call__(self, worker_id: str) -> bool:
        return worker_id in self.serving


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "state.db")
    yield store
    store.close()


def make_queue(store: Store, workers: Workers) -> JobQueue:
    return JobQueue(store, lambda endpoint_id, waiting: None, serving=workers)


def test_a_job_is_taken_once_and_completed_by_its_holder_only(store: Store) -> None:
    async def scenario() -> None:
        jobs = make_queue(store, Workers("w1", "w2"))
        job = jobs.submit("ep", {"input": {"x": 1}})
        assert job.status == "IN_QUEUE"
        taken = await jobs.take("ep", "w1", 1, 0)
        assert taken == [job] and job.status == "IN_PROGRESS" and job.worker_id == "w1"
        assert await jobs.take("ep", "w2", 1, 0) == []
        assert not jobs.complete("ep", "w2", job.id, {"output": 2})  # not its job
        assert jobs.complete("ep", "w1", job.id, {"output": 2})
        assert job.status == "COMPLETED" and job.output == 2
        assert not jobs.complete("ep", "w1", job.id, {"output": 3})  # never twice

    asyncio.run(scenario())


def test_bad_submissions_name_the_problem(store: Store) -> None:
    jobs = make_queue(store, Workers())
    with pytest.raises(JobError, match='"input"'):
        jobs.submit("ep", {"nope": 1})
    with pytest.raises(JobError, match="affinity"):
        jobs.submit("ep", {"input": {}, "affinity": 5})


def test_a_job_whose_worker_died_runs_again_then_fails_after_the_attempt_limit(
    store: Store,
) -> None:
    async def scenario() -> None:
        jobs = make_queue(store, Workers("w1"))
        job = jobs.submit("ep", {"input": {}})
        for attempt in range(1, MAX_ATTEMPTS + 1):
            job.not_before = 0.0  # skip the retry backoff
            assert await jobs.take("ep", f"w{attempt}", 1, 0) == [job]
            jobs.worker_gone(f"w{attempt}")
        assert job.status == "FAILED" and f"{MAX_ATTEMPTS} attempts" in (job.error or "")

    asyncio.run(scenario())


def test_a_job_with_affinity_waits_for_its_worker_while_that_worker_serves(
    store: Store,
) -> None:
    async def scenario() -> None:
        workers = Workers("w1", "w2")
        jobs = make_queue(store, workers)
        job = jobs.submit("ep", {"input": {}, "affinity": "w1"})
        assert await jobs.take("ep", "w2", 1, 0) == []  # another worker does not get it
        assert job.status == "IN_QUEUE"
        assert await jobs.take("ep", "w1", 1, 0) == [job]

    asyncio.run(scenario())


def test_a_waiting_worker_gets_only_the_jobs_it_may_take(store: Store) -> None:
    async def scenario() -> None:
        jobs = make_queue(store, Workers("w1", "w2"))
        other = asyncio.ensure_future(jobs.take("ep", "w2", 1, 5))
        mine = asyncio.ensure_future(jobs.take("ep", "w1", 1, 5))
        await asyncio.sleep(0)  # both long polls are waiting
        pinned = jobs.submit("ep", {"input": {}, "affinity": "w1"})
        assert await asyncio.wait_for(mine, 1) == [pinned]
        free = jobs.submit("ep", {"input": {}})
        assert await asyncio.wait_for(other, 1) == [free]

    asyncio.run(scenario())


def test_affinity_is_released_when_its_worker_drains_or_dies(store: Store) -> None:
    async def scenario() -> None:
        workers = Workers("w1", "w2")
        jobs = make_queue(store, workers)
        waiting = asyncio.ensure_future(jobs.take("ep", "w2", 1, 5))
        await asyncio.sleep(0)
        job = jobs.submit("ep", {"input": {}, "affinity": "w1"})
        assert not waiting.done() and job.status == "IN_QUEUE"
        workers.serving.discard("w1")  # the supervisor marks it draining, then tells us
        jobs.release_worker("w1")
        assert await asyncio.wait_for(waiting, 1) == [job]
        assert job.worker_id == "w2"

    asyncio.run(scenario())
