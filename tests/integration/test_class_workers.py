"""Class-based `@remote` on the real platform: live queue endpoints, called in-process.

A handle's first call creates the instance on a worker; later calls reach it there while
that worker lives; a killed worker's instance is created again elsewhere (and logged).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from helpers import platform_status, wait_for, worker_pids
from runpod_flash import CpuLiveServerless, remote

jobs = CpuLiveServerless(name="class-workers", workersMax=2, executionTimeoutMs=20_000)


class ModelNotReady(Exception):
    """Raised by a constructor; the caller must get this very class back."""


@remote(jobs)
class Counter:
    """Keeps a running total: the state a loaded model stands for."""

    def __init__(self, start: int = 0, *, step: int = 1) -> None:
        print(f"loading counter at {start}")
        self.total = start
        self.step = step
        self.pid = os.getpid()

    def add(self, times: int = 1) -> int:
        self.total += self.step * times
        return self.total

    async def where(self) -> int:
        await asyncio.sleep(0)
        return self.pid

    def fail(self, message: str) -> None:
        raise KeyError(message)

    def slow(self, seconds: float) -> str:
        import time

        time.sleep(seconds)
        return "done"


@remote(jobs)
class Fragile:
    def __init__(self, ready: bool) -> None:
        if not ready:
            raise ModelNotReady("weights are missing")

    def ping(self) -> str:
        return "pong"


def test_state_lasts_across_calls_and_handles_are_separate() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        first, second = Counter(100, step=10), Counter()
        totals_first = [await first.add(), await first.add(times=2)]
        totals_second = [await second.add(), await second.add()]
        return totals_first, totals_second

    assert asyncio.run(scenario()) == ([110, 130], [1, 2])


def test_constructor_output_is_shown_and_exceptions_keep_their_type(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def scenario() -> None:
        counter = Counter(7)
        assert await counter.add() == 8
        with pytest.raises(KeyError, match="no such key"):
            await counter.fail("no such key")
        assert await counter.add() == 9  # a method that raised leaves the instance as it was

    asyncio.run(scenario())
    assert "loading counter at 7" in capsys.readouterr().out


def test_a_constructor_that_raises_fails_the_call_and_is_tried_again() -> None:
    async def scenario() -> None:
        broken = Fragile(False)
        for _ in range(2):  # no instance was kept: each call runs the constructor again
            with pytest.raises(ModelNotReady, match="weights are missing"):
                await broken.ping()
        assert await Fragile(True).ping() == "pong"

    asyncio.run(scenario())


def test_a_timeout_applies_to_method_calls() -> None:
    slow_jobs = CpuLiveServerless(name="class-workers-slow", executionTimeoutMs=1000)
    Slow = remote(slow_jobs)(Counter.cls)

    async def scenario() -> None:
        with pytest.raises(TimeoutError, match="class-workers-slow"):
            await Slow().slow(30)

    asyncio.run(scenario())


def test_a_killed_workers_instance_is_created_again_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def first_calls(counter: object) -> tuple[int, int]:
        await counter.add()  # type: ignore[attr-defined]
        return await counter.add(), await counter.where()  # type: ignore[attr-defined]

    counter = Counter(0)
    total, pid = asyncio.run(first_calls(counter))
    assert total == 2
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid not in worker_pids(platform_status(), "class-workers"), timeout=30)
    with caplog.at_level(logging.WARNING, logger="runpod_flash"):
        assert asyncio.run(first_calls(counter))[0] == 2  # created again: state starts over
    assert any("was created again on worker" in r.getMessage() and counter.instance_id
               in r.getMessage() for r in caplog.records)


def test_calls_of_a_handle_stay_on_its_worker_while_others_serve() -> None:
    """Four handles called at once, over two workers: each keeps reaching its instance."""

    async def scenario() -> list[list[int]]:
        handles = [Counter(0) for _ in range(4)]
        return [sorted(set(await asyncio.gather(*(h.add() for h in handles))))
                for _ in range(3)]

    assert asyncio.run(scenario()) == [[1], [2], [3]]
