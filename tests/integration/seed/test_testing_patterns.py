# The seed document's "Testing Patterns" example, unchanged (everything up to the marker).
import pytest
from runpod_flash import LiveLoadBalancer, remote

api = LiveLoadBalancer(name="test-api")

@remote(api, method="POST", path="/api/calculate")
async def calculate(operation: str, a: int, b: int):
    if operation == "add":
        return a + b
    elif operation == "multiply":
        return a * b
    else:
        raise ValueError(f"Unknown operation: {operation}")

@pytest.mark.asyncio
async def test_calculate_add():
    result = await calculate("add", 5, 3)
    assert result == 8

@pytest.mark.asyncio
async def test_calculate_multiply():
    result = await calculate("multiply", 5, 3)
    assert result == 15

@pytest.mark.asyncio
async def test_calculate_invalid():
    with pytest.raises(ValueError):
        await calculate("unknown", 5, 3)

# --- end of the seed's code; below, proof that the calls above ran in a worker process ---

import os  # noqa: E402

from helpers import platform_status, worker_pids  # noqa: E402


@remote(api, method="GET", path="/api/pid")
def worker_pid() -> int:
    return os.getpid()


def test_calls_ran_in_a_platform_worker() -> None:
    pid = worker_pid()
    assert pid != os.getpid()
    assert pid in worker_pids(platform_status(), "test-api")
