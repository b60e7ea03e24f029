"""Live calls: ship the function and its arguments to a worker's `/execute`, via the platform.

The first call of a resource provisions its live endpoint (starting the embedded platform if
nothing answers); later calls go straight to the gateway on a kept-alive connection, sending
only the function's hash unless the worker asks for the code (HTTP 409).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

from runpod_flash import serialization
from runpod_flash.platform.client import Platform, PlatformError, ensure_platform
from runpod_flash.resources import ServerlessResource
from runpod_flash.stubs.transport import request

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


def call(
    endpoint: LiveEndpoint,
    shipped: Callable[[], tuple[str, str]],
    function_name: str,
    module_name: str,
    timeout_s: float | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run the function on a worker of `endpoint` and return its value (or raise its error)."""
    timeout = timeout_s or DEFAULT_TIMEOUT_S
    function_payload, function_hash = shipped()
    body = {
        "function_name": function_name,
        "function_hash": function_hash,
        "session": SESSION,
        "args": serialization.encode((args, kwargs), module_name),
    }
    reprovisioned = False
    while True:
        platform, url = endpoint.target()
        try:
            status, data = request(
                "POST", url + "/execute", json.dumps(body).encode(), platform.auth, timeout
            )
        except TimeoutError:
            raise TimeoutError(
                f"Execution timeout on {endpoint.name} after {_seconds(timeout)}s"
            ) from None
        except OSError as exc:
            if not reprovisioned:  # the platform may have stopped: start it and retry once
                endpoint.forget()
                reprovisioned = True
                continue
            raise ConnectionError(
                f"Failed to connect to endpoint {endpoint.name} ({url}): {exc}"
            ) from None
        if status == 409 and "function" not in body:
            body["function"] = function_payload
            continue
        if status == 404 and not reprovisioned:  # platform restarted without this endpoint
            endpoint.forget()
            reprovisioned = True
            continue
        if status != 200:
            text = data[:500].decode(errors="replace")
            raise RuntimeError(f"HTTP error from endpoint {endpoint.name}: {status} - {text}")
        return _result(json.loads(data))


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
