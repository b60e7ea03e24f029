"""The queue worker against a small fake platform speaking Runpod's worker protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash import serialization
from runpod_flash.runtime import queue_worker
from runpod_flash.runtime.queue_worker import fill_url, run_queue_worker, with_query

POLL_S = 0.3  # the fake platform's long-poll; short so tests stop fast
WAIT_S = 10.0


class BoomError(Exception):
    """Raised by `explode`."""


def multiply(a: int, b: int) -> int:
    return a * b


def explode(x: int) -> None:
    raise BoomError(f"bad value {x}")


class FakePlatform:
    """Hands out queued jobs and records what the worker reports, as the platform would."""

    def __init__(self) -> None:
        self.jobs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stops: asyncio.Queue[list[str]] = asyncio.Queue()
        self.done: dict[str, dict[str, Any]] = {}
        self.done_paths: list[str] = []
        self.streams: list[tuple[str, Any]] = []
        self.pings: list[dict[str, str]] = []
        self.takes: list[str] = []
        self.auth: set[str | None] = set()
        self.fail_takes = 0
        self.fail_done = 0
        self.port = 0

    def queue(self, job_id: str, job_input: Any) -> None:
        self.jobs.put_nowait({"id": job_id, "input": job_input})

    def app(self) -> Starlette:
        base = "/v2/ep"
        return Starlette(routes=[
            Route(base + "/job-take/{worker}", self.take),
            Route(base + "/job-take-batch/{worker}", self.take),
            Route(base + "/job-done/{worker}/{job}", self.job_done, methods=["POST"]),
            Route(base + "/job-stream/{worker}/{job}", self.job_stream, methods=["POST"]),
            Route(base + "/ping/{worker}", self.ping),
            Route(base + "/job-stop/{worker}", self.job_stop),
        ])

    @staticmethod
    async def _next(queue: asyncio.Queue[Any]) -> Any:
        try:
            return await asyncio.wait_for(queue.get(), POLL_S)
        except asyncio.TimeoutError:
            return None

    async def take(self, request: Request) -> Response:
        self.takes.append(str(request.url))
        self.auth.add(request.headers.get("authorization"))
        if self.fail_takes:
            self.fail_takes -= 1
            return Response(status_code=500)
        job = await self._next(self.jobs)
        if job is None:
            return Response(status_code=204)
        if "batch_size" not in request.query_params:
            return JSONResponse(job)
        jobs = [job]
        while len(jobs) < int(request.query_params["batch_size"]) and not self.jobs.empty():
            jobs.append(self.jobs.get_nowait())
        return JSONResponse(jobs)

    async def job_done(self, request: Request) -> Response:
        if self.fail_done:
            self.fail_done -= 1
            return Response(status_code=503)
        assert request.query_params["isStream"] == "false"
        self.done_paths.append(request.url.path)
        self.done[request.path_params["job"]] = json.loads(await request.body())
        return Response()

    async def job_stream(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.streams.append((request.path_params["job"], body["output"]))
        return Response()

    async def ping(self, request: Request) -> Response:
        self.pings.append(dict(request.query_params))
        return Response()

    async def job_stop(self, request: Request) -> Response:
        job_ids = await self._next(self.stops)
        if job_ids is None:
            return Response(status_code=204)
        return JSONResponse({"jobsToStop": job_ids})

    async def result(self, job_id: str) -> dict[str, Any]:
        await wait_until(lambda: job_id in self.done)
        return self.done[job_id]

    async def error(self, job_id: str) -> dict[str, Any]:
        body = await self.result(job_id)
        assert set(body) == {"error"}, body
        return json.loads(body["error"])

    def in_progress(self, job_id: str) -> bool:
        return any(job_id in ping["job_id"].split(",") for ping in self.pings)


async def wait_until(predicate: Callable[[], Any], timeout: float = WAIT_S) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_worker, "ERROR_BACKOFF_S", 0.05)
    monkeypatch.setattr(queue_worker, "POST_BACKOFF_S", 0.05)


@pytest_asyncio.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    fake = FakePlatform()
    config = uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started)
    fake.port = server.servers[0].sockets[0].getsockname()[1]
    yield fake
    server.should_exit = True
    await asyncio.wait_for(task, WAIT_S)


def set_worker_env(monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, **env: str) -> None:
    """The environment the platform gives its worker processes."""
    base = f"http://127.0.0.1:{platform.port}/v2/ep"
    settings = {
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=cpu",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=cpu",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=cpu",
        "RUNPOD_AI_API_KEY": "secret-key",
        "RUNPOD_POD_ID": "w1",
        "RUNPOD_PING_INTERVAL": "30",
        "FLASH_JOB_CONCURRENCY": "1",
        **env,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


@contextlib.asynccontextmanager
async def running_worker(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, mode: str, **env: str
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[None]]]:
    """The worker as a task, stopped (and awaited) on the way out."""
    set_worker_env(monkeypatch, platform, **env)
    stop = asyncio.Event()
    task = asyncio.create_task(run_queue_worker(mode, stop))
    try:
        yield stop, task
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


def live_input(func: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A live call's job input, as the SDK ships it."""
    payload, digest = serialization.encode_function(func)
    return {
        "function_name": func.__name__, "function_hash": digest, "session": "s1",
        "args": serialization.encode((args, kwargs)), "function": payload,
    }


APP_MODULE = '''
import asyncio

STATE = {"cancelled": False, "arrived": 0}


from runpod_flash import CpuServerlessEndpoint, remote


@remote(CpuServerlessEndpoint(name="qw-unit"))
def add(a: int, b: int = 0) -> int:
    return a + b


async def greet(name: str) -> str:
    await asyncio.sleep(0)
    return f"hello {name}"


def count(n: int):
    for i in range(n):
        yield {"i": i}


async def acount(n: int):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


def fail(key: str) -> None:
    raise KeyError(key)


def opaque() -> object:
    return object()


async def nap(seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        STATE["cancelled"] = True
        raise
    return "rested"


async def meet() -> int:
    STATE["arrived"] += 1
    for _ in range(300):
        if STATE["arrived"] >= 2:
            return STATE["arrived"]
        await asyncio.sleep(0.01)
    raise TimeoutError("the other job never ran alongside")
'''


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An unpacked app: a module and a manifest with a one-function and a many-function
    resource. Returns a getter of the imported module (for its STATE)."""
    module = f"qw_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(APP_MODULE)
    many = ["add", "greet", "count", "acount", "fail", "opaque", "nap", "meet"]
    manifest = {"resources": {
        "single": {"functions": [{"name": "greet", "module": module, "is_async": True}]},
        "many": {"functions": [{"name": n, "module": module, "is_async": False} for n in many]},
    }}
    (tmp_path / "flash_manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("FLASH_APP_DIR", str(tmp_path))
    monkeypatch.setenv("FLASH_RESOURCE_NAME", "many")
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield lambda: sys.modules[module]
    sys.modules.pop(module, None)


# --- URL helpers ----------------------------------------------------------------------------


def test_fill_url_replaces_whole_tokens() -> None:
    template = "http://h:1/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu"
    assert fill_url(template, RUNPOD_POD_ID="w 1", ID="j/2") == \
        "http://h:1/v2/ep/job-done/w%201/j%2F2?gpu=cpu"
    assert fill_url("http://h/ping/$RUNPOD_POD_ID", ID="x") == "http://h/ping/$RUNPOD_POD_ID"


def test_with_query_appends_to_an_existing_query() -> None:
    assert with_query("http://h/x?gpu=cpu", isStream="false") == "http://h/x?gpu=cpu&isStream=false"
    assert with_query("http://h/x", job_id="a,b", n=2) == "http://h/x?job_id=a,b&n=2"


# --- live mode ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_live_job_runs_a_shipped_function(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform
) -> None:
    async with running_worker(monkeypatch, platform, "live"):
        platform.queue("j1", live_input(multiply, 6, b=7))
        body = await platform.result("j1")
    assert serialization.decode(body["output"]["result"]) == 42
    assert body["output"]["output"] == []
    assert platform.done_paths == ["/v2/ep/job-done/w1/j1"]
    assert platform.takes[0].endswith("/job-take/w1?gpu=cpu&job_in_progress=0")
    assert platform.auth == {"secret-key"}


@pytest.mark.asyncio
async def test_live_job_that_raises_fails_with_the_exception(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform
) -> None:
    async with running_worker(monkeypatch, platform, "live"):
        platform.queue("j1", live_input(explode, 3))
        platform.queue("j2", {"function_name": "f"})
        error = await platform.error("j1")
        malformed = await platform.error("j2")
    assert error["error_type"] == "BoomError"
    assert error["error_message"] == "bad value 3"
    assert "explode" in error["error_traceback"]
    assert isinstance(serialization.decode(error["exception"]), BoomError)
    assert malformed["error_type"] == "ValueError"
    assert "missing" in malformed["error_message"]


# --- deployed mode --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_deployed_single_function_takes_kwargs_without_selector(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    monkeypatch.setenv("FLASH_RESOURCE_NAME", "single")
    async with running_worker(monkeypatch, platform, "deployed"):
        platform.queue("j1", {"name": "ada"})
        platform.queue("j2", {"function": "greet", "name": "bob"})
        assert await platform.result("j1") == {"output": "hello ada"}
        assert await platform.result("j2") == {"output": "hello bob"}


@pytest.mark.asyncio
async def test_deployed_selector_picks_among_functions(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    async with running_worker(monkeypatch, platform, "deployed"):
        platform.queue("j1", {"function": "add", "a": 2, "b": 3})
        platform.queue("j2", {"function": "greet", "name": "ada"})
        assert await platform.result("j1") == {"output": 5}
        assert await platform.result("j2") == {"output": "hello ada"}


@pytest.mark.asyncio
async def test_deployed_bad_input_fails_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    async with running_worker(monkeypatch, platform, "deployed"):
        platform.queue("unknown", {"function": "nope", "a": 1})
        platform.queue("unnamed", {"a": 1})
        platform.queue("kwargs", {"function": "add", "a": 1, "c": 1})
        platform.queue("list", [1, 2])
        unknown = await platform.error("unknown")
        unnamed = await platform.error("unnamed")
        kwargs = await platform.error("kwargs")
        listed = await platform.error("list")
    assert unknown["error_type"] == "ValueError"
    assert "'nope'" in unknown["error_message"]
    assert "add, count, fail, greet" in unknown["error_message"]
    assert '"function"' in unnamed["error_message"]
    assert kwargs["error_type"] == "TypeError"
    assert "add(a: int, b: int = 0)" in kwargs["error_message"]
    assert "'c'" in kwargs["error_message"]
    assert "JSON object" in listed["error_message"]


@pytest.mark.asyncio
async def test_deployed_exceptions_and_unserializable_results_fail(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    async with running_worker(monkeypatch, platform, "deployed"):
        platform.queue("raises", {"function": "fail", "key": "k"})
        platform.queue("opaque", {"function": "opaque"})
        raised = await platform.error("raises")
        opaque = await platform.error("opaque")
    assert raised["error_type"] == "KeyError"
    assert raised["error_message"] == "'k'"
    assert "in fail" in raised["error_traceback"]
    assert opaque["error_message"].startswith("result is not JSON-serializable:")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("function", "expected"), [("count", [{"i": 0}, {"i": 1}, {"i": 2}]), ("acount", [0, 1, 2])]
)
async def test_deployed_generator_streams_partials_and_returns_all(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any,
    function: str, expected: list[Any],
) -> None:
    async with running_worker(monkeypatch, platform, "deployed"):
        platform.queue("g", {"function": function, "n": 3})
        assert await platform.result("g") == {"output": expected}
    assert platform.streams == [("g", item) for item in expected]


# --- the loop: heartbeat, concurrency, stop signals, shutdown, retries -----------------------


@pytest.mark.asyncio
async def test_pings_carry_the_jobs_in_progress(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    async with running_worker(monkeypatch, platform, "deployed"):
        await wait_until(lambda: platform.pings)
        assert platform.pings[0]["job_id"] == ""
        platform.queue("busy", {"function": "nap", "seconds": 0.5})
        await wait_until(lambda: platform.in_progress("busy"))
        await platform.result("busy")
    assert {ping["runpod_version"] for ping in platform.pings} == {"openflash"}


@pytest.mark.asyncio
async def test_concurrency_runs_jobs_side_by_side(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    async with running_worker(monkeypatch, platform, "deployed", FLASH_JOB_CONCURRENCY="2"):
        platform.queue("a", {"function": "meet"})
        platform.queue("b", {"function": "meet"})
        assert await platform.result("a") == {"output": 2}
        assert await platform.result("b") == {"output": 2}
    assert any("/job-take-batch/w1?gpu=cpu&batch_size=2" in url for url in platform.takes)


@pytest.mark.asyncio
async def test_job_stop_cancels_a_running_job_without_a_result(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    async with running_worker(monkeypatch, platform, "deployed"):
        platform.queue("long", {"function": "nap", "seconds": 30})
        await wait_until(lambda: platform.in_progress("long"))
        platform.stops.put_nowait(["long", "not-here"])
        await wait_until(lambda: app_module().STATE["cancelled"])
        platform.queue("next", {"function": "greet", "name": "ada"})
        assert await platform.result("next") == {"output": "hello ada"}
    assert "long" not in platform.done


@pytest.mark.asyncio
async def test_stop_finishes_in_flight_jobs_and_takes_no_more(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    async with running_worker(monkeypatch, platform, "deployed") as (stop, task):
        platform.queue("last", {"function": "nap", "seconds": 0.3})
        await wait_until(lambda: platform.in_progress("last"))
        takes = len(platform.takes)
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
        assert platform.done["last"] == {"output": "rested"}
        assert len(platform.takes) == takes


@pytest.mark.asyncio
async def test_platform_errors_are_retried(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform, app_module: Any
) -> None:
    platform.fail_takes = 2
    platform.fail_done = 1
    async with running_worker(monkeypatch, platform, "deployed"):
        platform.queue("j", {"function": "add", "a": 1})
        assert await platform.result("j") == {"output": 1}
    assert platform.fail_takes == platform.fail_done == 0


@pytest.mark.asyncio
async def test_unknown_mode_is_refused(
    monkeypatch: pytest.MonkeyPatch, platform: FakePlatform
) -> None:
    set_worker_env(monkeypatch, platform)
    with pytest.raises(ValueError, match="unknown queue worker mode"):
        await run_queue_worker("sideways", asyncio.Event())
