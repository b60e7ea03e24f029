"""The queue worker: pulls jobs from the platform over Runpod's worker protocol and runs them.

The platform speaks the protocol of Runpod's own workers (job-take, job-done, job-stream,
ping, job-stop), so this worker and an unmodified `runpod.serverless.start` script are
interchangeable behind a queue-based endpoint. Jobs run as asyncio tasks and sync code runs
in threads, so heartbeats and stop signals keep flowing while user code works.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from runpod_flash import strict_json
from runpod_flash.http.aio import ConnectionPool, Timeouts
from runpod_flash.runtime.executor import (
    CallRequest,
    FunctionStore,
    Instances,
    MethodCallRequest,
    execute,
    execute_method,
    format_remote_traceback,
    public_method,
    run_callable,
)
from runpod_flash.runtime.project import load_function, resource_entry

log = logging.getLogger(__name__)

RUNPOD_VERSION = "openflash"
ERROR_BACKOFF_S = 1.0  # after a failed or refused job-take, ping or job-stop poll
POLL_TIMEOUT_S = 90.0  # the platform holds long-polls ~20 s; give up well after that
POST_TIMEOUT_S = 30.0
POST_ATTEMPTS = 3
POST_BACKOFF_S = 0.5
DRAIN_TIMEOUT_S = 30.0

T = TypeVar("T")
StreamSender = Callable[[Any], Awaitable[None]]
Runner = Callable[[Any, StreamSender], Awaitable[dict[str, Any]]]

_TOKEN = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def fill_url(template: str, **values: str) -> str:
    """Replace `$NAME` tokens (`$ID`, `$RUNPOD_POD_ID`) with URL-quoted values.

    Tokens are matched whole, so `$ID` never eats the start of `$RUNPOD_POD_ID`.
    """
    return _TOKEN.sub(
        lambda m: quote(values[m[1]], safe="") if m[1] in values else m[0], template
    )


def with_query(url: str, **params: str | int) -> str:
    """Append query parameters, whether or not the URL already has a query."""
    separator = "&" if "?" in url else "?"
    return url + separator + urlencode(params, safe=",")


def _split_url(url: str) -> tuple[str, int, str]:
    """(host, port, request target) of a plain-http URL, the only kind the platform hands out."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported worker URL {url!r}: expected http://host:port/...")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 80, target


@dataclass(frozen=True)
class WorkerSettings:
    """The worker's configuration, as the platform passes it in the environment."""

    worker_id: str
    take_url: str
    done_url: str
    stream_url: str
    ping_url: str
    api_key: str
    ping_interval_s: float
    concurrency: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerSettings:
        missing = [
            name
            for name in ("RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_POST_OUTPUT",
                         "RUNPOD_WEBHOOK_POST_STREAM", "RUNPOD_WEBHOOK_PING")
            if not env.get(name)
        ]
        if missing:
            raise RuntimeError(
                f"queue worker: {', '.join(missing)} not set; workers are started by the "
                "platform, which sets them"
            )
        try:
            ping_ms = int(env.get("RUNPOD_PING_INTERVAL") or 10000)
            concurrency = int(env.get("FLASH_JOB_CONCURRENCY") or 1)
        except ValueError as exc:
            raise RuntimeError(f"queue worker: bad numeric setting: {exc}") from exc
        worker_id = env.get("RUNPOD_POD_ID") or uuid.uuid4().hex
        settings = cls(
            worker_id=worker_id,
            take_url=fill_url(env["RUNPOD_WEBHOOK_GET_JOB"], ID=worker_id),
            done_url=env["RUNPOD_WEBHOOK_POST_OUTPUT"],
            stream_url=env["RUNPOD_WEBHOOK_POST_STREAM"],
            ping_url=fill_url(env["RUNPOD_WEBHOOK_PING"], RUNPOD_POD_ID=worker_id),
            api_key=env.get("RUNPOD_AI_API_KEY", ""),
            ping_interval_s=max(ping_ms, 1) / 1000,
            concurrency=max(concurrency, 1),
        )
        for url in (settings.take_url, settings.done_url, settings.stream_url, settings.ping_url):
            _split_url(url)  # fail at start, not on the first job
        return settings


class _Http:
    """The worker's calls to the platform: kept-alive connections, raw-key authorization."""

    def __init__(self, api_key: str) -> None:
        self._pool = ConnectionPool()
        self._headers = [(b"content-type", b"application/json")]
        if api_key:
            self._headers.append((b"authorization", api_key.encode("latin-1")))

    async def call(
        self, method: str, url: str, timeout: float, body: bytes = b""
    ) -> tuple[int, bytes]:
        """Raises OSError (connection trouble) or TimeoutError; HTTP errors are returned."""
        host, port, target = _split_url(url)
        status, _, payload = await self._pool.fetch(
            host, port, method, target, self._headers, body, Timeouts(timeout, timeout, timeout)
        )
        return status, payload

    def close(self) -> None:
        self._pool.close()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _error_json(error_type: str, message: str, traceback: str, **extra: Any) -> dict[str, Any]:
    """A FAILED job's body: `error` is a JSON string, as Runpod's SDK sends it."""
    details = {"error_type": error_type, "error_message": message,
               "error_traceback": traceback, **extra}
    return {"error": json.dumps(details)}


def _encode_result(body: dict[str, Any]) -> bytes:
    """The job-done body, strict JSON; a result JSON cannot carry (an object, NaN, a lone
    surrogate) fails the job with the reason, instead of the worker or the platform."""
    try:
        return strict_json.dumps(body)
    except (TypeError, ValueError) as exc:
        failed = _error_json("TypeError" if isinstance(exc, TypeError) else "ValueError",
                             f"result is not JSON-serializable: {exc}", "")
        return strict_json.dumps(failed)


# --- runners: a job's input in, its job-done body out ---------------------------------------


class LiveRunner:
    """Runs shipped functions, as the live worker's `/execute` does, with one warm store,
    and methods of shipped classes on the instances their callers' handles name."""

    def __init__(self) -> None:
        self._store = FunctionStore()
        self._instances = Instances()

    async def __call__(self, job_input: Any, stream: StreamSender) -> dict[str, Any]:
        if isinstance(job_input, dict) and "class_name" in job_input:
            result = await execute_method(self._store, self._instances,
                                          MethodCallRequest.from_json(job_input))
        else:
            result = await execute(self._store, CallRequest.from_json(job_input))
        if result["success"]:
            return {"output": {"result": result["result"], "output": result["output"]}}
        return _error_json(
            result["error_type"], result["error"], result["traceback"],
            exception=result["exception"], output=result["output"],
        )


CLASS_CALL_KEYS = ("method", "instance_id", "constructor_args", "constructor_kwargs")


class DeployedRunner:
    """Runs a deployed resource's functions, called with the job input as keyword arguments.

    A class is called as `{"method": "predict", ...kwargs}` (plus `"function": "Model"` when
    the resource has several); its instance is created on first use and kept, one per
    `instance_id` (an SDK handle's; none means the worker's default instance), with
    `constructor_args`/`constructor_kwargs` applied when it is created.
    """

    def __init__(self, functions: dict[str, Callable[..., Any]]) -> None:
        if not functions:
            raise RuntimeError("queue worker: the resource has no functions")
        self._functions = functions
        self._instances = Instances()

    @classmethod
    def from_app_dir(cls, app_dir: Path, resource_name: str) -> DeployedRunner:
        functions = resource_entry(app_dir, resource_name).get("functions", [])
        return cls({f["name"]: load_function(app_dir, f["module"], f["name"], resource_name)
                    for f in functions})

    def _select(self, kwargs: dict[str, Any]) -> tuple[str, Callable[..., Any]]:
        """The function the input names with `function`; optional when there is only one
        (or, for a `method` call, only one class)."""
        selector = kwargs.get("function")
        if isinstance(selector, str) and selector in self._functions:
            del kwargs["function"]
            return selector, self._functions[selector]
        available = ", ".join(sorted(self._functions))
        classes = [name for name, f in self._functions.items() if inspect.isclass(f)]
        if selector is None and "method" in kwargs and len(classes) == 1:
            return classes[0], self._functions[classes[0]]
        if len(self._functions) == 1:
            name, func = next(iter(self._functions.items()))
            if selector is None or "function" in _parameters(func):
                return name, func
        if selector is None:
            raise ValueError(
                f"job input must name the function to run with \"function\": one of {available}"
            )
        raise ValueError(f"unknown function {selector!r}; available: {available}")

    async def __call__(self, job_input: Any, stream: StreamSender) -> dict[str, Any]:
        if not isinstance(job_input, dict):
            raise ValueError("job input must be a JSON object of keyword arguments")
        kwargs = dict(job_input)
        name, func = self._select(kwargs)
        if inspect.isclass(func):
            func = await self._method(name, func, kwargs)
            name = f"{name}.{func.__name__}"
        try:
            inspect.signature(func).bind(**kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}{inspect.signature(func)}: {exc}") from None
        if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
            outputs = []
            async for item in _iterate(func(**kwargs)):
                await stream(item)
                outputs.append(item)
            return {"output": outputs}
        return {"output": await run_callable(func, (), kwargs)}

    async def _method(
        self, name: str, cls: type, kwargs: dict[str, Any]
    ) -> Callable[..., Any]:
        """The bound method a class call names, on its instance; its keys leave `kwargs`."""
        method, instance_id, args, init = (kwargs.pop(key, None) for key in CLASS_CALL_KEYS)
        if not isinstance(method, str):
            raise ValueError(f"'{name}' is a class: the job input names the method to call "
                             f"with \"method\", e.g. {{\"method\": \"predict\", ...}}")
        if not isinstance(args or [], list) or not isinstance(init or {}, dict):
            raise ValueError("constructor_args must be a list and constructor_kwargs an object")
        instance = await self._instances.get(
            (name, str(instance_id or "")), lambda: cls(*(args or []), **(init or {}))
        )
        return public_method(instance, method)


def _parameters(func: Callable[..., Any]) -> Any:
    return inspect.signature(func).parameters


_DONE = object()


async def _iterate(items: AsyncIterator[Any] | Iterator[Any]) -> AsyncIterator[Any]:
    """Walk an async generator in place, a sync one step by step in threads."""
    if isinstance(items, AsyncIterator):
        async for item in items:
            yield item
        return
    while (item := await asyncio.to_thread(next, items, _DONE)) is not _DONE:
        yield item


# --- the worker loop ------------------------------------------------------------------------


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None when `stop` is set first (then `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # unlike `await task`, never swallows our own cancel
    return None if task.cancelled() else task.result()


class QueueWorker:
    """Takes jobs while slots are free, runs them as tasks, and reports their results."""

    def __init__(self, settings: WorkerSettings, runner: Runner) -> None:
        self._settings = settings
        self._runner = runner
        self._http = _Http(settings.api_key)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopped: set[str] = set()
        self._closing = False  # the helper loops end once set

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: take and run jobs; then let in-flight jobs finish (bounded)."""
        helpers = [asyncio.create_task(self._ping_loop()),
                   asyncio.create_task(self._stop_signal_loop())]
        try:
            await self._take_loop(stop)
            await self._drain()
        finally:
            self._closing = True
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self._http.close()

    async def _take_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            free = self._settings.concurrency - len(self._running)
            if free <= 0:
                running = set(self._running.values())
                await _unless_stopped(
                    asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED), stop
                )
                continue
            for job in await _unless_stopped(self._take(free), stop) or []:
                self._start(job)

    async def _take(self, free: int) -> list[dict[str, Any]]:
        url = self._settings.take_url
        if free > 1:
            url = with_query(url.replace("/job-take/", "/job-take-batch/"), batch_size=free)
        url = with_query(url, job_in_progress=int(bool(self._running)))
        try:
            status, body = await self._http.call("GET", url, POLL_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("job-take failed: %s", _describe(exc))
            await asyncio.sleep(ERROR_BACKOFF_S)
            return []
        if status in (204, 400):
            return []
        if status != 200:
            if status != 429:
                log.warning("job-take answered HTTP %d: %s", status, body[:200])
            await asyncio.sleep(ERROR_BACKOFF_S)
            return []
        try:
            jobs = json.loads(body) if body else []
        except ValueError:
            log.warning("job-take answered invalid JSON: %s", body[:200])
            return []
        jobs = jobs if isinstance(jobs, list) else [jobs]
        valid = [job for job in jobs if isinstance(job, dict) and "id" in job]
        if len(valid) != len(jobs):
            log.warning("job-take answered jobs without an id; ignored them")
        return valid

    def _start(self, job: dict[str, Any]) -> None:
        job_id = str(job["id"])
        if job_id in self._running:
            log.warning("job %s is already running here; ignored the second copy", job_id)
            return
        self._running[job_id] = asyncio.create_task(self._run_job(job_id, job.get("input")))

    async def _run_job(self, job_id: str, job_input: Any) -> None:
        try:
            try:
                body = await self._runner(job_input, lambda item: self._send_partial(job_id, item))
            except asyncio.CancelledError:
                if job_id in self._stopped:
                    log.info("job %s stopped by the platform", job_id)
                    return
                raise
            except Exception as exc:
                traceback = format_remote_traceback(exc)
                log.error("job %s failed:\n%s", job_id, traceback)
                body = _error_json(type(exc).__name__, str(exc), traceback)
            url = fill_url(self._settings.done_url, RUNPOD_POD_ID=self._settings.worker_id,
                           ID=job_id)
            await self._post(with_query(url, isStream="false"), _encode_result(body), job_id)
        finally:
            self._running.pop(job_id, None)
            self._stopped.discard(job_id)

    async def _send_partial(self, job_id: str, item: Any) -> None:
        try:
            payload = strict_json.dumps({"output": item})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"yielded value is not JSON-serializable: {exc}") from None
        url = fill_url(self._settings.stream_url, RUNPOD_POD_ID=self._settings.worker_id,
                       ID=job_id)
        await self._post(with_query(url, isStream="false"), payload, job_id)

    async def _post(self, url: str, payload: bytes, job_id: str) -> None:
        """POST a result, retrying what may pass on a second try (connection errors, 5xx)."""
        problem = ""
        for attempt in range(POST_ATTEMPTS):
            if attempt:
                await asyncio.sleep(POST_BACKOFF_S * attempt)
            try:
                status, body = await self._http.call("POST", url, POST_TIMEOUT_S, payload)
            except (OSError, asyncio.TimeoutError) as exc:
                problem = _describe(exc)
                continue
            if status < 500:
                if status >= 400:
                    log.error("job %s: the platform refused its result: HTTP %d %s",
                              job_id, status, body[:200])
                return
            problem = f"HTTP {status}"
        log.error("job %s: could not report its result (%s)", job_id, problem)

    async def _ping_loop(self) -> None:
        """The heartbeat: without it the platform requeues this worker's jobs."""
        while not self._closing:
            url = with_query(self._settings.ping_url, job_id=",".join(self._running),
                             runpod_version=RUNPOD_VERSION)
            try:
                await self._http.call("GET", url, 2 * self._settings.ping_interval_s)
            except (OSError, asyncio.TimeoutError) as exc:
                if self._closing:
                    return
                log.warning("ping failed: %s", _describe(exc))
            await asyncio.sleep(self._settings.ping_interval_s)

    async def _stop_signal_loop(self) -> None:
        url = self._settings.take_url.replace("/job-take/", "/job-stop/")
        while not self._closing:
            try:
                status, body = await self._http.call("GET", url, POLL_TIMEOUT_S)
            except (OSError, asyncio.TimeoutError) as exc:
                if self._closing:  # Python 3.11's wait_for may turn our cancel into a timeout
                    return
                log.warning("job-stop poll failed: %s", _describe(exc))
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            if status in (204, 400):
                continue
            try:
                if status != 200:
                    raise ValueError(f"HTTP {status}")
                job_ids = json.loads(body)["jobsToStop"]
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("job-stop poll answered %s: %s", exc, body[:200])
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            for job_id in job_ids:
                self._cancel(str(job_id))

    def _cancel(self, job_id: str) -> None:
        """Async code gets CancelledError; a sync call runs on, its result dropped."""
        task = self._running.get(job_id)
        if task is not None:
            self._stopped.add(job_id)
            task.cancel()

    async def _drain(self) -> None:
        tasks = set(self._running.values())
        if not tasks:
            return
        log.info("stopping: waiting for %d job(s) to finish", len(tasks))
        _, late = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.warning("stopping: abandoned %d job(s) still running after %.0f s",
                        len(late), DRAIN_TIMEOUT_S)


def _runner_for(mode: str) -> Runner:
    if mode == "live":
        return LiveRunner()
    if mode != "deployed":
        raise ValueError(f"unknown queue worker mode {mode!r}; expected 'live' or 'deployed'")
    app_dir, resource = os.environ.get("FLASH_APP_DIR"), os.environ.get("FLASH_RESOURCE_NAME")
    if not app_dir or not resource:
        raise RuntimeError("queue worker: deployed mode needs FLASH_APP_DIR and "
                           "FLASH_RESOURCE_NAME")
    return DeployedRunner.from_app_dir(Path(app_dir), resource)


async def run_queue_worker(mode: str, stop: asyncio.Event | None = None) -> None:
    """Serve queue jobs until SIGTERM/SIGINT (or `stop`, which replaces the signals)."""
    settings = WorkerSettings.from_env()
    runner = _runner_for(mode)
    signals: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            signals.append(sig)
    log.info("queue worker %s (%s) taking up to %d job(s) at once",
             settings.worker_id, mode, settings.concurrency)
    try:
        await QueueWorker(settings, runner).run(stop)
    finally:
        for sig in signals:
            asyncio.get_running_loop().remove_signal_handler(sig)
