"""Live calls: ship the function and its arguments to a worker's `/execute`, via the platform.

The first call of a resource provisions its live endpoint (starting the embedded platform if
nothing answers); later calls go straight to the gateway on a kept-alive connection, sending
only the function's hash unless the worker asks for the code (HTTP 409).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from runpod_flash import serialization
from runpod_flash.control import Platform, PlatformError, ensure_platform
from runpod_flash.http.aio import ConnectionPool, Timeouts
from runpod_flash.http.blocking import request
from runpod_flash.http.errors import ConnectFailed, ResponseTimeout
from runpod_flash.resources import ServerlessResource

DEFAULT_TIMEOUT_S = 30.0
PROVISION_TIMEOUT_S = 900.0
# Identifies this caller process: module state on a worker is kept per caller session.
SESSION = uuid.uuid4().hex


class ProvisioningError(RuntimeError):
    """The live endpoint could not be created (dependencies, GPUs, worker start-up)."""


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

    def forget(self) -> None:
        """Drop the cached target (the platform restarted or the endpoint went away)."""
        self._target = None

    def _provision(self) -> tuple[Platform, str]:
        platform = ensure_platform()
        try:
            summary = platform.call("POST", "/api/v1/endpoints/live", self.spec)
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


def _replay_output(chunks: list[list[str]]) -> None:
    """Show the remote function's prints and log lines here, as if it ran locally."""
    for stream_name, text in chunks:
        stream = sys.stderr if stream_name == "stderr" else sys.stdout
        stream.write(text)
    if chunks:
        sys.stdout.flush()


class _Call:
    """One live call's protocol, free of I/O so a blocking and an asyncio driver share it.

    The drivers send `payload()` to `url + "/execute"` and report back what happened; this
    decides whether to resend (with the code, after a 409), re-provision once (the platform
    restarted or went away), or finish.
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
        self._function_payload, function_hash = shipped()
        self._body = {
            "function_name": function_name,
            "function_hash": function_hash,
            "session": SESSION,
            "args": serialization.encode((args, kwargs), module_name),
        }
        self._reprovisioned = False

    def payload(self) -> bytes:
        return json.dumps(self._body).encode()

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

    def unreachable(self, url: str, exc: OSError) -> None:
        """The platform did not answer: retry once (it is restarted), then give up.

        Only a call that was never sent is retried; one cut off while running may have run.
        """
        if not isinstance(exc, ConnectFailed):
            raise ConnectionError(
                f"Connection to endpoint {self.endpoint.name} ({url}) was lost during the "
                f"call, which was not retried because it may have run: {exc}"
            ) from None
        if not self._reprovision():
            raise ConnectionError(
                f"Failed to connect to endpoint {self.endpoint.name} ({url}): {exc}"
            ) from None

    def answered(self, status: int, data: bytes) -> tuple[bool, Any]:
        """(done, value); raises the remote error. Not done means: send again."""
        if status == 409 and "function" not in self._body:
            self._body["function"] = self._function_payload
            return False, None
        if status == 404 and self._reprovision():  # platform restarted without the endpoint
            return False, None
        if status != 200:
            text = data[:500].decode(errors="replace")
            raise RuntimeError(f"HTTP error from endpoint {self.endpoint.name}: {status} - {text}")
        return True, _result(json.loads(data))


def call(*spec: Any) -> Any:
    """Run the function on a worker and return its value (or raise its error); blocking."""
    attempt = _Call(*spec)
    while True:
        platform, url = attempt.endpoint.target()
        try:
            status, data = request(
                "POST", url + "/execute", attempt.payload(), platform.auth, attempt.timeout
            )
        except TimeoutError:
            raise attempt.timed_out() from None
        except OSError as exc:
            attempt.unreachable(url, exc)
            continue
        done, value = attempt.answered(status, data)
        if done:
            return value


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ConnectionPool] = (
    weakref.WeakKeyDictionary()
)


async def acall(*spec: Any) -> Any:
    """`call` for `async def` functions: native asyncio, on whatever loop awaits it."""
    attempt = _Call(*spec)
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = ConnectionPool()
    while True:
        target = attempt.endpoint.cached_target()
        platform, url = target or await asyncio.to_thread(attempt.endpoint.target)
        parts = urlsplit(url)
        headers = [(b"authorization", f"Bearer {platform.token}".encode()),
                   (b"content-type", b"application/json")]
        try:
            status, _, data = await pool.fetch(
                parts.hostname or "127.0.0.1", parts.port or 80, "POST",
                parts.path + "/execute", headers, attempt.payload(),
                Timeouts(first_byte=attempt.timeout, idle=attempt.timeout),
            )
        except ResponseTimeout:
            raise attempt.timed_out() from None
        except OSError as exc:
            attempt.unreachable(url, exc)
            continue
        done, value = attempt.answered(status, data)
        if done:
            return value


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
