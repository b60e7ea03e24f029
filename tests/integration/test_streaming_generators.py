"""Generator functions stream their items, deployed (server-sent events) and live (NDJSON).

Deployed routes are read with the blocking HTTP client through the gateway, byte for byte;
the same generators are then called through `@remote` from a script. Live generators are
defined here and called in this process. "The first item arrives before the last one is
produced" is proven without timing: the generator waits (bounded) for a marker file that the
test creates only once it holds the first item. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import flash, run_python, wait_for
from runpod_flash import CpuLiveLoadBalancer, remote
from runpod_flash.http.blocking import Response, open_response

PROJECT = Path(__file__).parent / "projects" / "streaming"
ENDPOINT = "streaming-gens"
IO_TIMEOUT_S = 15.0
MAX_WAIT_S = 20.0  # how long a generator waits for its marker before giving up

# -- the deployed endpoint, read over HTTP ----------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("streaming") / "project"
    shutil.copytree(PROJECT, target)
    return target


@pytest.fixture(scope="module")
def deployed(project: Path) -> Iterator[str]:
    """The endpoint's URL on the session platform; undeployed after the module."""
    result = flash("deploy", str(project), "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    yield next(r["url"] for r in json.loads(result.stdout) if r["name"] == ENDPOINT)
    flash("undeploy", ENDPOINT, timeout=60)


@pytest.fixture
def marker(tmp_path: Path) -> str:
    return str(tmp_path / f"marker-{uuid.uuid4().hex[:8]}")


def ended(marker: str) -> str:
    """How the generator waiting on `marker` ended, once its `finally:` ran (bounded wait)."""
    closed = Path(marker + ".closed")
    wait_for(closed.exists, timeout=IO_TIMEOUT_S)
    return closed.read_text()


async def aended(marker: str) -> str:
    """`ended` for async tests: the event loop keeps running (it closes aborted sockets)."""
    closed = Path(marker + ".closed")
    deadline = time.monotonic() + IO_TIMEOUT_S
    while not closed.exists():
        assert time.monotonic() < deadline, f"{closed} not written within {IO_TIMEOUT_S}s"
        await asyncio.sleep(0.02)
    return closed.read_text()


class Body:
    """A streamed response body, read one server-sent event at a time."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self._chunks = iter(response)
        self._buffer = b""

    def event(self) -> bytes:
        """The next whole event, as sent (b"" at the end of the body)."""
        while b"\n\n" not in self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                rest, self._buffer = self._buffer, b""
                return rest
            self._buffer += chunk
        event, _, self._buffer = self._buffer.partition(b"\n\n")
        return event + b"\n\n"

    def rest(self) -> bytes:
        return self._buffer + b"".join(self._chunks)


@contextmanager
def streamed(method: str, url: str, body: Any = None) -> Iterator[Body]:
    payload = None if body is None else json.dumps(body).encode()
    response = open_response(method, url, payload, {"Accept": "text/event-stream"},
                             IO_TIMEOUT_S)
    try:
        yield Body(response)
    finally:
        response.close()


def header(response: Response, name: bytes) -> str:
    return next((v for k, v in response.headers if k == name), b"").decode()


def test_sync_generator_route_sends_each_item_as_an_event(deployed: str, marker: str) -> None:
    with streamed("GET", f"{deployed}/count?marker={marker}&n=3") as body:
        assert body.response.status == 200
        assert header(body.response, b"content-type").startswith("text/event-stream")
        assert header(body.response, b"cache-control") == "no-cache"
        assert body.event() == b'data: {"n":0}\n\n'
        Path(marker).touch()  # only now may the generator produce the rest
        assert body.rest() == b'data: {"n":1}\n\ndata: {"n":2}\n\n'
    assert ended(marker) == "finished"


def test_async_generator_route_sends_each_item_as_an_event(deployed: str, marker: str) -> None:
    with streamed("POST", f"{deployed}/tokens", {"prompt": "hi", "marker": marker}) as body:
        assert body.response.status == 200
        assert body.event() == b'data: "hi"\n\n'
        Path(marker).touch()
        assert body.rest() == b'data: "streamed"\n\ndata: "tokens"\n\n'
    assert ended(marker) == "finished"


def test_exception_mid_stream_ends_it_with_an_error_event(deployed: str) -> None:
    with streamed("GET", f"{deployed}/fail?n=2") as body:
        assert body.response.status == 200
        assert body.rest() == (
            b"data: 0\n\ndata: 1\n\n"
            b'event: error\ndata: {"error":"failed after 2","error_type":"StreamError"}\n\n'
        )


def test_exception_before_the_first_item_is_a_plain_error_response(deployed: str) -> None:
    with streamed("GET", f"{deployed}/fail?n=0") as body:
        assert body.response.status == 500
        assert json.loads(body.rest()) == {"error": "failed after 0", "error_type": "StreamError"}


def test_client_disconnect_closes_a_sync_generator(deployed: str, marker: str) -> None:
    with streamed("GET", f"{deployed}/ticks?marker={marker}") as body:
        assert body.event() == b"data: 0\n\n"
    # Left alone, the generator ticks on for MAX_WAIT_S and then ends "finished".
    assert ended(marker) == "GeneratorExit"


def test_client_disconnect_closes_an_async_generator(deployed: str, marker: str) -> None:
    with streamed("POST", f"{deployed}/tokens", {"prompt": "bye", "marker": marker}) as body:
        assert body.event() == b'data: "bye"\n\n'
    # It was waiting for a marker that never comes: the cancellation ends that wait.
    assert ended(marker) in ("CancelledError", "GeneratorExit")


SCRIPT = """
import asyncio, json, os
from pathlib import Path
import streaming_gens as g

marker = os.environ["MARKER"]
out = {}

items = g.count(marker=marker + ".sync", n=3)
out["sync_first"] = next(items)
Path(marker + ".sync").touch()
out["sync_rest"] = list(items)

try:
    out["sync_error_items"] = [item for item in g.fail_after(2)]
except g.StreamError as exc:
    out["sync_error"] = [type(exc).__name__, str(exc), list(getattr(exc, "__notes__", []))]
try:
    list(g.fail_after(0))
except g.StreamError as exc:
    out["error_before_first"] = str(exc)

for tick in g.ticks(marker=marker + ".break"):
    break  # the generator is dropped here: that closes its connection

async def main():
    words = g.tokens("hello", marker + ".async")
    out["async_first"] = await words.__anext__()
    Path(marker + ".async").touch()
    out["async_rest"] = [word async for word in words]
    seen = []
    try:
        async for item in g.afail_after(1):
            seen.append(item)
    except ValueError as exc:
        out["async_error"] = [seen, str(exc)]

asyncio.run(main())
print(json.dumps(out))
"""


def test_remote_stubs_iterate_deployed_generators(
    deployed: str, project: Path, marker: str
) -> None:
    result = run_python(SCRIPT, env={"MARKER": marker}, cwd=project, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["sync_first"], out["sync_rest"]) == ({"n": 0}, [{"n": 1}, {"n": 2}])
    assert "sync_error_items" not in out
    name, message, notes = out["sync_error"]
    assert (name, message) == ("StreamError", "failed after 2")
    assert any("streaming-gens" in note for note in notes)
    assert out["error_before_first"] == "failed after 0"
    assert (out["async_first"], out["async_rest"]) == ("hello", ["streamed", "tokens"])
    assert out["async_error"] == [[0], "async failed after 1"]
    assert ended(marker + ".sync") == ended(marker + ".async") == "finished"
    assert ended(marker + ".break") == "GeneratorExit"


# -- live generators, through @remote in this process -----------------------------------------

live_api = CpuLiveLoadBalancer(name="live-streams", workersMax=1)
slow_live_api = CpuLiveLoadBalancer(name="live-streams-slow", workersMax=1,
                                    executionTimeoutMs=1000)


class LiveStreamError(Exception):
    """Defined here: the caller must get this very class back from the worker."""


def wait_for_file(path: str) -> bool:
    deadline = time.monotonic() + MAX_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def record_end(marker: str, how: str) -> None:
    Path(marker + ".closed").write_text(how)


@remote(live_api, method="POST", path="/count")
def live_count(marker: str, fail: bool = False) -> Iterator[int]:
    how = "finished"
    try:
        print("worker started counting")
        yield 0
        yield 1 if wait_for_file(marker) else -1
        if fail:
            raise LiveStreamError("live failure after 2")
        yield 2
        return "the end"
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        record_end(marker, how)


@remote(live_api, method="POST", path="/words")
async def live_words(marker: str, fail: bool = False) -> AsyncIterator[str]:
    how = "finished"
    try:
        yield "first"
        deadline = time.monotonic() + MAX_WAIT_S
        while not os.path.exists(marker) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        yield "second" if os.path.exists(marker) else "gave up"
        if fail:
            raise ValueError("async live failure")
        yield "third"
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        record_end(marker, how)


@remote(live_api, method="POST", path="/ticks")
def live_ticks(marker: str) -> Iterator[int]:
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


@remote(live_api, method="POST", path="/aticks")
async def live_aticks(marker: str) -> AsyncIterator[int]:
    how = "finished"
    try:
        deadline = time.monotonic() + MAX_WAIT_S
        i = 0
        while time.monotonic() < deadline:
            yield i
            i += 1
            await asyncio.sleep(0.02)
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        record_end(marker, how)


@remote(slow_live_api, method="POST", path="/stall")
def live_stall() -> Iterator[str]:
    yield "before the stall"
    time.sleep(3)
    yield "too late"


def test_live_sync_generator_yields_items_as_they_come(
    marker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    items = live_count(marker)
    assert next(items) == 0
    assert "worker started counting" in capsys.readouterr().out  # replayed with the item
    Path(marker).touch()
    assert next(items) == 1
    assert next(items) == 2
    with pytest.raises(StopIteration) as stopped:
        next(items)
    assert stopped.value.value == "the end"
    assert ended(marker) == "finished"


@pytest.mark.asyncio
async def test_live_async_generator_yields_items_as_they_come(marker: str) -> None:
    words = live_words(marker)
    assert await asyncio.wait_for(words.__anext__(), IO_TIMEOUT_S) == "first"
    Path(marker).touch()
    assert [word async for word in words] == ["second", "third"]
    assert await aended(marker) == "finished"


def test_live_exception_mid_stream_raises_its_class(marker: str) -> None:
    Path(marker).touch()
    received = []
    with pytest.raises(LiveStreamError, match="live failure after 2") as raised:
        for item in live_count(marker, fail=True):
            received.append(item)
    assert received == [0, 1]
    assert "raise LiveStreamError" in raised.value.remote_traceback


@pytest.mark.asyncio
async def test_live_async_exception_mid_stream_raises_its_class(marker: str) -> None:
    Path(marker).touch()
    received = []
    with pytest.raises(ValueError, match="async live failure"):
        async for word in live_words(marker, fail=True):
            received.append(word)
    assert received == ["first", "second"]


def test_live_early_break_closes_the_worker_generator(marker: str) -> None:
    for tick in live_ticks(marker):
        assert tick == 0
        break
    assert ended(marker) == "GeneratorExit"


@pytest.mark.asyncio
async def test_live_async_early_close_closes_the_worker_generator(marker: str) -> None:
    ticks = live_aticks(marker)
    async for tick in ticks:
        assert tick == 0
        break
    await ticks.aclose()
    assert await aended(marker) in ("CancelledError", "GeneratorExit")


def test_live_stream_that_stalls_past_the_execution_timeout_times_out() -> None:
    items = live_stall()
    assert next(items) == "before the stall"
    with pytest.raises(TimeoutError, match="Execution timeout on live-streams-slow after 1s"):
        next(items)
