"""Queue-based endpoints for the tests: plain JSON kwargs in, JSON out."""

import os
import time

from runpod_flash import CpuServerlessEndpoint, remote

jobs = CpuServerlessEndpoint(name="jobs", workersMax=1, executionTimeoutMs=20000)
steps = CpuServerlessEndpoint(name="steps", workersMax=1)


class QuotaExceeded(Exception):
    pass


@remote(jobs)
def add(a: int, b: int) -> int:
    return a + b


@remote(jobs)
def slow(seconds: float, tag: str = "") -> dict:
    log = os.environ.get("FLASH_TEST_RUN_LOG")
    time.sleep(seconds)
    if log:
        with open(log, "a") as handle:
            handle.write(f"{tag}\n")
    return {"tag": tag, "pid": os.getpid()}


@remote(jobs)
def fail(message: str) -> None:
    raise QuotaExceeded(message)


@remote(steps)
async def double(x: int) -> int:
    return x * 2


@remote(steps)
def countdown(n: int):
    yield from range(n, 0, -1)
