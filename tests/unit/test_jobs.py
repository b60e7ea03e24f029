"""The job queue's state machine: submit, take, complete, requeue, and worker affinity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import wait_for
from runpod_flash.platform import jobs as jobs_module
from runpod_flash.platform.jobs import (
    INLINE_INPUT_BYTES,
    MAX_ATTEMPTS,
    JobError,
    JobQueue,
    QueueFull,
)
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


def test_past_the_cap_a_submission_is_refused_with_429(store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_MAX_QUEUED_JOBS", "2")
    jobs = make_queue(store, Workers())
    jobs.submit("ep", {"input": 1})
    jobs.submit("ep", {"input": 2})
    with pytest.raises(QueueFull, match="FLASH_MAX_QUEUED_JOBS") as refused:
        jobs.submit("ep", {"input": 3})
    assert refused.value.status == 429
    jobs.submit("other", {"input": 4})  # the cap is per endpoint


def test_a_large_input_stays_in_the_store_until_a_worker_takes_it(store: Store) -> None:
    async def scenario() -> None:
        jobs = make_queue(store, Workers("w1"))
        big = "x" * (INLINE_INPUT_BYTES + 1)
        job = jobs.submit("ep", {"input": {"blob": big}})
        small = jobs.submit("ep", {"input": {"n": 1}})
        assert job.stored_input is not job.input and small.stored_input == {"n": 1}
        assert [j.input for j in await jobs.take("ep", "w1", 2, 0)] == [{"blob": big},
                                                                         {"n": 1}]

    asyncio.run(scenario())


def test_a_finished_job_leaves_memory_and_is_read_back_from_the_store(tmp_path: Path) -> None:
    async def scenario(store: Store) -> str:
        jobs = make_queue(store, Workers("w1"))
        job = jobs.submit("ep", {"input": {}})
        await jobs.take("ep", "w1", 1, 0)
        assert jobs.complete("ep", "w1", job.id, {"output": {"big": "y" * 1000}})
        assert job.id not in jobs.jobs  # memory keeps unfinished work only
        again = jobs.get("ep", job.id)  # the pending write answers before it is committed
        assert again.view() == job.view() and again.done.is_set()
        with pytest.raises(KeyError):
            jobs.get("another-endpoint", job.id)
        return job.id

    store = Store(tmp_path / "state.db")
    job_id = asyncio.run(scenario(store))
    store.close()  # writes what is pending
    reopened = Store(tmp_path / "state.db")
    try:
        assert reopened.unfinished_jobs(0) == []
        assert (reopened.job(job_id) or {}).get("output") == {"big": "y" * 1000}
    finally:
        reopened.close()


def test_finished_jobs_are_pruned_by_age_and_by_count(store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_MAX_FINISHED_JOBS", "3")

    async def scenario() -> list[str]:
        jobs = make_queue(store, Workers("w1"))
        ids = []
        for n in range(5):
            job = jobs.submit("ep", {"input": n})
            await jobs.take("ep", "w1", 1, 0)
            jobs.complete("ep", "w1", job.id, {"output": n})
            ids.append(job.id)
        jobs.sweep()  # its first pass prunes
        return ids

    ids = asyncio.run(scenario())
    wait_for(lambda: store.finished_jobs() == 3)
    assert [store.job(i) is not None for i in ids] == [False, False, True, True, True]
    store.prune_jobs(finished_before=time.time() + 1, keep=100)  # all past their age
    wait_for(lambda: store.finished_jobs() == 0)


def test_deadlines_wait_in_a_heap_and_act_when_due(store: Store) -> None:
    async def scenario() -> None:
        jobs = make_queue(store, Workers("w1"))
        expiring = jobs.submit("ep", {"input": {}, "policy": {"ttl": 1}})
        running = jobs.submit("ep", {"input": {}, "policy": {"executionTimeout": 1}})
        idle = jobs.submit("ep", {"input": {}})
        jobs.queue("ep").waiting.remove(expiring)  # only the other two are taken
        await jobs.take("ep", "w1", 2, 0)
        jobs.queue("ep").waiting.append(expiring)
        assert running.status == idle.status == "IN_PROGRESS"
        idle.lease_until = 0.0  # its worker stopped pinging (its lease deadline is due)
        await asyncio.sleep(0.01)
        jobs.sweep()
        assert expiring.status == "TIMED_OUT" and "ttl" in (expiring.error or "")
        assert running.status == "TIMED_OUT" and "execution timeout" in (running.error or "")
        assert idle.status == "IN_PROGRESS"  # its lease deadline (30 s) is not due yet
        jobs.heartbeat("w1", [idle.id])  # a ping moves the lease on; the heap re-arms it
        assert len(jobs._deadlines) <= 6

    asyncio.run(scenario())


def test_void_deadlines_are_dropped_once_they_outnumber_live_ones(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs_module, "DEADLINE_SLACK", 10)

    async def scenario() -> None:
        jobs = make_queue(store, Workers("w1"))
        for _ in range(20):
            job = jobs.submit("ep", {"input": {}})
            await jobs.take("ep", "w1", 1, 0)
            jobs.complete("ep", "w1", job.id, {"output": 1})
        assert len(jobs._deadlines) == 60  # ttl, timeout and lease of each finished job
        jobs.sweep()
        assert jobs._deadlines == []

    asyncio.run(scenario())


def test_a_draining_worker_takes_no_job_even_on_a_new_long_poll(store: Store) -> None:
    async def scenario() -> None:
        jobs = make_queue(store, Workers("w1", "w2"))
        jobs.release_worker("w1")  # the supervisor drains it
        job = jobs.submit("ep", {"input": {}})
        assert await jobs.take("ep", "w1", 1, 0) == []
        late = asyncio.ensure_future(jobs.take("ep", "w1", 1, 5))
        await asyncio.sleep(0)
        other = jobs.submit("ep", {"input": {}})
        assert await jobs.take("ep", "w2", 2, 0) == [job, other]
        assert not late.done()
        jobs.worker_gone("w1")
        assert await asyncio.wait_for(late, 1) == []
        assert job.attempts == other.attempts == 1

    asyncio.run(scenario())


def test_unfinished_jobs_survive_a_restart_and_running_ones_are_queued_again(
    tmp_path: Path,
) -> None:
    async def first_run(store: Store) -> list[str]:
        jobs = make_queue(store, Workers("w1"))
        queued = jobs.submit("ep", {"input": {"blob": "z" * (INLINE_INPUT_BYTES + 1)}})
        running = jobs.submit("ep", {"input": {"n": 2}})
        jobs.queue("ep").waiting.remove(queued)
        await jobs.take("ep", "w1", 1, 0)
        jobs.queue("ep").waiting.appendleft(queued)
        return [queued.id, running.id]

    async def second_run(store: Store, ids: list[str]) -> None:
        jobs = make_queue(store, Workers("w2"))
        jobs.start()
        try:
            assert {job.id: job.status for job in jobs.jobs.values()} == dict.fromkeys(
                ids, "IN_QUEUE")
            jobs.jobs[ids[1]].not_before = 0.0
            taken = await jobs.take("ep", "w2", 2, 0)  # the requeued one first
            assert [job.input for job in taken] == [
                {"n": 2}, {"blob": "z" * (INLINE_INPUT_BYTES + 1)}]
        finally:
            jobs.stop()

    store = Store(tmp_path / "state.db")
    ids = asyncio.run(first_run(store))
    store.close()
    store = Store(tmp_path / "state.db")
    try:
        asyncio.run(second_run(store, ids))
    finally:
        store.close()


def test_the_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    Store(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
