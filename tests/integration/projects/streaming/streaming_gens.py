"""Generator routes the streaming tests drive: deployed, they answer server-sent events.

Each generator that must prove "first item before the last is produced" yields its first
item, then waits for a marker file the test creates only after receiving that item. Every
wait is bounded; a generator that gave up says so in its next item. The `finally:` blocks
record how the generator ended in `<marker>.closed`.
"""

import asyncio
import os
import time
from pathlib import Path

from runpod_flash import CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="streaming-gens", workersMin=1, workersMax=1)

MAX_WAIT_S = 20.0


class StreamError(Exception):
    """Raised mid-stream; callers importing this module get this very class back."""


def wait_for_file(path: str) -> bool:
    deadline = time.monotonic() + MAX_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def await_file(path: str) -> bool:
    deadline = time.monotonic() + MAX_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def record_end(marker: str, how: str) -> None:
    Path(marker + ".closed").write_text(how)


@remote(api, method="GET", path="/count")
def count(marker: str, n: int = 3):
    """A sync generator: item 0, then (once the marker exists) items 1..n-1."""
    how = "finished"
    try:
        yield {"n": 0}
        if not wait_for_file(marker):
            yield {"gave_up_waiting": marker}
        for i in range(1, n):
            yield {"n": i}
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        record_end(marker, how)


@remote(api, method="POST", path="/tokens")
async def tokens(prompt: str, marker: str):
    """An async generator: the prompt, then (once the marker exists) two more words."""
    how = "finished"
    try:
        yield prompt
        if not await await_file(marker):
            yield f"gave up waiting for {marker}"
        for word in ("streamed", "tokens"):
            yield word
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        record_end(marker, how)


@remote(api, method="GET", path="/fail")
def fail_after(n: int):
    """Raises StreamError after n items: before the first, that is a plain 500."""
    yield from range(n)
    raise StreamError(f"failed after {n}")


@remote(api, method="GET", path="/afail")
async def afail_after(n: int):
    for i in range(n):
        yield i  # an async generator has no `yield from`
    raise ValueError(f"async failed after {n}")


@remote(api, method="GET", path="/ticks")
def ticks(marker: str):
    """Yields a tick every 20 ms for up to MAX_WAIT_S: only a closed stream ends it sooner."""
    how = "finished"
    try:
        deadline = time.monotonic() + MAX_WAIT_S
        i = 0
        while time.monotonic() < deadline:
            yield i
            i += 1
            time.sleep(0.02)
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        record_end(marker, how)
