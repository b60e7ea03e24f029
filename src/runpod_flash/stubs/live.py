"""Live calls: ship the function and its arguments to a worker's `/execute`, via the platform.

The first call of a resource provisions its live endpoint (starting the embedded platform if
nothing answers); later calls go straight to the gateway on a kept-alive connection, sending
only the function's hash unless the worker asks for the code (HTTP 409). A generator
function's call streams: `stream`/`astream` yield its items as the worker's lines arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

from runpod_flash import config, serialization
from runpod_flash.control import Platform, PlatformError, ensure_platform
from runpod_flash.dependencies import (
    APPROVED_KEY,
    SystemPackagesRefused,
    approve_system_packages,
)
from runpod_flash.http.aio import ConnectionPool, Timeouts
from runpod_flash.http.aio import Response as AsyncResponse
from runpod_flash.http.blocking import Response, open_response
from runpod_flash.http.errors import ConnectFailed
from runpod_flash.resources import ServerlessResource
from runpod_flash.streaming import NDJSONDecoder, aread_items, read_items

DEFAULT_TIMEOUT_S = 30.0
PROVISION_TIMEOUT_S = 900.0
# Identifies this caller process: module state on a worker is kept per caller session.
SESSION = uuid.uuid4().hex
# Whether a call's remote output (prints, log lines) is written here when it arrives with the
# response. `flash run` turns it off: it follows the workers' logs as they are written.
REPLAY_OUTPUT = True


class ProvisioningError(RuntimeError):
    """The live endpoint could not be created (dependencies, GPUs, worker start-up)."""


class PayloadTooLarge(ValueError):
    """A call's arguments are larger than the endpoint takes; the message says by how much,
    the setting that changes the limit, and how to pass the data instead."""


class GpuFallbackWarning(UserWarning):
    """A GPU resource runs on the CPU because this machine has no GPU."""


def _seconds(value: float) -> str:
    return f"{value:g}"


class LiveEndpoint:
    """The platform endpoint serving one resource with one dependency set, provisioned once."""

    def __init__(
        self,
        resource: ServerlessResource,
        dependencies: list[str],
        system_dependencies: list[str],
        origin: tuple[str, int],
    ) -> None:
        self.name = resource.name
        self.origin = origin  # where warnings point: the first decorated function using it
        self.spec = {
            **resource.platform_spec(),
            "dependencies": sorted(dependencies),
            "system_dependencies": sorted(system_dependencies),
            "python": sys.executable,
            "cwd": os.getcwd(),
        }
        self._lock = threading.Lock()
        self._target: tuple[Platform, str] | None = None

    def target(self) -> tuple[Platform, str]:
        """(platform, endpoint URL), provisioning the endpoint on first use."""
        target = self._target
        if target is not None:
            return target
        with self._lock:
            if self._target is None:
                self._target = self._provision()
            return self._target

    def cached_target(self) -> tuple[Platform, str] | None:
        return self._target

    def cached_id(self) -> str | None:
        """The platform's id of this endpoint, once provisioned."""
        target = self._target
        return None if target is None else target[1].rstrip("/").rsplit("/", 1)[-1]

    def forget(self) -> None:
        """Drop the cached target (the platform restarted or the endpoint went away)."""
        self._target = None

    def _provision(self) -> tuple[Platform, str]:
        spec = self.spec
        if spec["system_dependencies"]:  # asked here: the platform is a daemon and cannot ask
            try:
                approved = approve_system_packages(self.name, spec["system_dependencies"])
            except (SystemPackagesRefused, ValueError) as exc:
                raise ProvisioningError(
                    f"Could not provision endpoint '{self.name}': {exc}"
                ) from None
            spec = {**spec, APPROVED_KEY: approved} if approved else spec
        platform = ensure_platform()
        try:
            summary = platform.call("POST", "/api/v1/endpoints/live", spec)
            shown = 0
            deadline = time.monotonic() + PROVISION_TIMEOUT_S
            while summary["status"] == "building" and time.monotonic() < deadline:
                shown = self._show_progress(summary["progress"], shown)
                time.sleep(0.1)
                summary = platform.call("GET", f"/api/v1/endpoints/{summary['id']}")
            self._show_progress(summary["progress"], shown)
        except PlatformError as exc:
            raise ProvisioningError(f"Could not provision endpoint '{self.name}': {exc}") from None
        if summary["status"] != "ready":
            raise ProvisioningError(
                summary.get("error") or f"Endpoint '{self.name}' is {summary['status']}"
            )
        if summary.get("warning"):
            warnings.warn_explicit(summary["warning"], GpuFallbackWarning, *self.origin)
        return platform, platform.url + summary["path"]

    def _show_progress(self, lines: list[str], shown: int) -> int:
        """Print environment build lines the caller has not seen yet (the platform keeps 20)."""
        for line in lines[shown:] if shown <= len(lines) else lines:
            print(f"[flash] {self.name}: {line}", file=sys.stderr, flush=True)
        return len(lines)


_endpoints: dict[tuple[Any, ...], LiveEndpoint] = {}
_endpoints_lock = threading.Lock()


def endpoint_for(
    resource: ServerlessResource,
    dependencies: list[str],
    system_dependencies: list[str],
    origin: tuple[str, int],
) -> LiveEndpoint:
    """The one LiveEndpoint of this process for a resource config and dependency set."""
    key = (resource.config_hash, tuple(sorted(dependencies)), tuple(sorted(system_dependencies)))
    with _endpoints_lock:
        endpoint = _endpoints.get(key)
        if endpoint is None:
            endpoint = LiveEndpoint(resource, dependencies, system_dependencies, origin)
            _endpoints[key] = endpoint
        return endpoint


def provisioned(config_hash: str | None = None) -> list[tuple[LiveEndpoint, str]]:
    """This process's provisioned live endpoints (of one resource config, if given), each
    with its endpoint id."""
    found = []
    for key, endpoint in list(_endpoints.items()):
        endpoint_id = endpoint.cached_id()
        if endpoint_id is not None and config_hash in (None, key[0]):
            found.append((endpoint, endpoint_id))
    return found


def _replay_output(chunks: list[list[str]]) -> None:
    """Show the remote function's prints and log lines here, as if it ran locally (unless
    REPLAY_OUTPUT is off; queue calls use this too)."""
    if not REPLAY_OUTPUT:
        return
    for stream_name, text in chunks:
        stream = sys.stderr if stream_name == "stderr" else sys.stdout
        stream.write(text)
    if chunks:
        sys.stdout.flush()


class _Call:
    """One live call's protocol, free of I/O so a blocking and an asyncio driver share it.

    The drivers send `payload()` to `url + "/execute"` and report back what happened; this
    decides whether to resend (with the code, after a 409), re-provision once (the platform
    restarted or went away), or fail, and which error the caller sees.
    """

    def __init__(
        self,
        endpoint: LiveEndpoint,
        shipped: Callable[[], tuple[str, str]],
        function_name: str,
        module_name: str,
        timeout_s: float | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout_s or DEFAULT_TIMEOUT_S
        self.url = ""  # where the last attempt went
        self._function_payload, function_hash = shipped()
        self._body = {
            "function_name": function_name,
            "function_hash": function_hash,
            "session": SESSION,
            "args": serialization.encode((args, kwargs), module_name),
        }
        self._function_name = function_name
        self._reprovisioned = False
        self._size = 0

    def payload(self) -> bytes:
        """The request body; one over the body limit is refused here, before any upload."""
        data = json.dumps(self._body).encode()
        self._size = len(data)
        if self._size > config.max_body_bytes():
            raise self.too_large(config.max_body_bytes())
        return data

    def too_large(self, limit: int | None) -> PayloadTooLarge:
        return PayloadTooLarge(config.over_limit(
            f"The arguments of {self._function_name}() on endpoint {self.endpoint.name}",
            self._size, limit, config.ENV_MAX_BODY_MB,
        ))

    def timed_out(self) -> TimeoutError:
        return TimeoutError(
            f"Execution timeout on {self.endpoint.name} after {_seconds(self.timeout)}s"
        )

    def _reprovision(self) -> bool:
        if self._reprovisioned:
            return False
        self.endpoint.forget()
        self._reprovisioned = True
        return True

    def failure(self, exc: OSError) -> Exception:
        """The caller's error for a transport failure once the call may have run."""
        if isinstance(exc, TimeoutError):
            return self.timed_out()
        return ConnectionError(
            f"Connection to endpoint {self.endpoint.name} ({self.url}) was lost during the "
            f"call, which was not retried because it may have run: {exc}"
        )

    def unreachable(self, exc: OSError) -> None:
        """The platform did not answer: retry once (it is restarted), then give up.

        Only a call that was never sent is retried; one cut off while running may have run.
        """
        if not isinstance(exc, ConnectFailed):
            raise self.failure(exc) from None
        if not self._reprovision():
            raise ConnectionError(
                f"Failed to connect to endpoint {self.endpoint.name} ({self.url}): {exc}"
            ) from None

    def resend(self, status: int, data: bytes) -> None:
        """A non-200 answer: returns when the call is to be sent again, raises otherwise."""
        if status == 409 and "function" not in self._body:
            self._body["function"] = self._function_payload
            return
        if status == 404 and self._reprovision():  # platform restarted without the endpoint
            return
        if status == 504:  # the gateway gave up first: its limit is the execution timeout too
            raise self.timed_out()
        if status == 413:  # the platform's setting is lower than this process's
            raise self.too_large(None)
        text = data[:500].decode(errors="replace")
        raise RuntimeError(f"HTTP error from endpoint {self.endpoint.name}: {status} - {text}")


def _open(attempt: _Call) -> Response | None:
    """Send the call; its 200 response (body unread), or None to send it again."""
    platform, attempt.url = attempt.endpoint.target()
    try:
        response = open_response(
            "POST", attempt.url + "/execute", attempt.payload(), platform.auth, attempt.timeout
        )
        if response.status == 200:
            return response
        status, data = response.status, response.read()
    except OSError as exc:
        attempt.unreachable(exc)
        return None
    attempt.resend(status, data)
    return None


def call(*spec: Any) -> Any:
    """Run the function on a worker and return its value (or raise its error); blocking."""
    attempt = _Call(*spec)
    while (response := _open(attempt)) is None:
        pass
    try:
        data = response.read()
    except OSError as exc:
        raise attempt.failure(exc) from None
    finally:
        response.close()  # kept for the next call once the body was read whole
    return _result(json.loads(data))


def stream(*spec: Any) -> Iterator[Any]:
    """A generator function's call: a generator that sends it when iteration starts and
    yields the items as the worker produces them; it returns what the remote one returned.
    Closing it early closes the connection, which closes the generator on the worker."""
    return _stream(_Call(*spec))


def _stream(attempt: _Call) -> Generator[Any, None, Any]:
    while (response := _open(attempt)) is None:
        pass
    try:
        return (yield from read_items(response, _Lines(attempt.endpoint.name), attempt.failure))
    finally:
        response.close()


_pools: dict[asyncio.AbstractEventLoop, tuple[ConnectionPool, AsyncGenerator[None, None]]] = {}


def loop_pool() -> ConnectionPool:
    """The running event loop's pool for SDK calls (an asyncio pool serves one loop).

    Its connections hold the loop, so the pool must go when the loop does: a generator
    registered with the loop closes it when the loop shuts down its async generators
    (`asyncio.run`, `asyncio.Runner`, pytest-asyncio), and pools of loops closed without
    that are dropped when another loop makes its pool.
    """
    loop = asyncio.get_running_loop()
    entry = _pools.get(loop)
    if entry is None:
        for closed in [other for other in _pools if other.is_closed()]:
            del _pools[closed]
        pool = ConnectionPool()
        closer = _close_with_loop(loop, pool)
        with contextlib.suppress(StopIteration):
            closer.asend(None).send(None)  # runs it to its `yield`; the loop now knows it
        entry = _pools[loop] = (pool, closer)
    return entry[0]


async def _close_with_loop(loop: asyncio.AbstractEventLoop, pool: ConnectionPool
                           ) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        pool.close()
        _pools.pop(loop, None)


async def _aopen(attempt: _Call, pool: ConnectionPool) -> AsyncResponse | None:
    """`_open` on the asyncio pool: each wait for the response (and for each later piece of
    its body) is bounded by the execution timeout."""
    target = attempt.endpoint.cached_target()
    platform, attempt.url = target or await asyncio.to_thread(attempt.endpoint.target)
    parts = urlsplit(attempt.url)
    headers = [(b"authorization", f"Bearer {platform.token}".encode()),
               (b"content-type", b"application/json")]
    try:
        response = await pool.request(
            parts.hostname or "127.0.0.1", parts.port or 80, "POST", parts.path + "/execute",
            headers, attempt.payload(), Timeouts(first_byte=attempt.timeout, idle=attempt.timeout),
        )
        if response.status == 200:
            return response
        status, data = response.status, await response.read()
    except OSError as exc:
        attempt.unreachable(exc)
        return None
    attempt.resend(status, data)
    return None


async def acall(*spec: Any) -> Any:
    """`call` for `async def` functions: native asyncio, on whatever loop awaits it."""
    attempt = _Call(*spec)
    pool = loop_pool()
    while (response := await _aopen(attempt, pool)) is None:
        pass
    try:
        data = await response.read()
    except OSError as exc:
        raise attempt.failure(exc) from None
    return _result(json.loads(data))


def astream(*spec: Any) -> AsyncIterator[Any]:
    """`stream` for `async def` generator functions, on the asyncio pool."""
    return _astream(_Call(*spec))


async def _astream(attempt: _Call) -> AsyncIterator[Any]:
    pool = loop_pool()
    while (response := await _aopen(attempt, pool)) is None:
        pass
    try:
        items = aread_items(response, _Lines(attempt.endpoint.name), attempt.failure)
        async with contextlib.aclosing(items):
            async for item in items:
                yield item
    finally:
        await response.aclose()


class _Lines:
    """Reads a streamed call's NDJSON (`executor.execute_stream`): items as they come, the
    remote output replayed as it comes, and the last line's result or error at the end."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._decoder = NDJSONDecoder()
        self._final: dict[str, Any] | None = None

    def feed(self, data: bytes) -> Iterator[Any]:
        for line in self._decoder.feed(data):
            if "success" in line:
                self._final = line
                continue
            _replay_output(line.get("output") or [])
            if "item" in line:
                yield serialization.decode(line["item"])

    def finish(self) -> Any:
        if self._final is None:
            raise ConnectionError(
                f"The stream from endpoint {self._endpoint} ended without the call's result"
            )
        return _result(self._final)


def _result(response: dict[str, Any]) -> Any:
    _replay_output(response.get("output") or [])
    if response.get("success"):
        return serialization.decode(response["result"])
    raise serialization.rebuild_exception(
        response.get("exception"),
        response.get("error_type", "Exception"),
        response.get("error", ""),
        response.get("traceback", ""),
    )
