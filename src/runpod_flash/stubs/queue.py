"""Queue-based calls: each call is a job on the endpoint's durable queue (`/v2/{id}/runsync`).

Live resources ship the function like live load-balanced calls do (same errors, output and
timeouts; the output is replayed unless `live.REPLAY_OUTPUT` is off); deployed ones send
plain JSON keyword arguments naming the function to run.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from typing import Any

from runpod_flash import serialization
from runpod_flash.http.blocking import request
from runpod_flash.resources import ServerlessResource
from runpod_flash.stubs.http_route import _json_or_type_error, _raise_for, endpoint_url
from runpod_flash.stubs.live import SESSION, LiveEndpoint, _replay_output, _seconds

DEFAULT_TIMEOUT_S = 30.0
MAX_RUNSYNC_WAIT_MS = 300_000
POLL_INTERVAL_S = 0.2


def _run_job(auth: dict[str, str], queue_url: str, body: dict[str, Any], timeout: float,
             name: str) -> dict[str, Any]:
    """Submit with runsync and wait for a final state (polling past runsync's wait)."""
    wait_ms = min(MAX_RUNSYNC_WAIT_MS, max(1000, int(timeout * 1000)))
    deadline = time.monotonic() + timeout
    try:
        status, data = request("POST", f"{queue_url}/runsync?wait={wait_ms}",
                               json.dumps(body).encode(), auth, timeout + 5)
        if status != 200:
            raise RuntimeError(f"HTTP error from endpoint {name}: {status} - "
                               f"{data[:500].decode(errors='replace')}")
        job = json.loads(data)
        while job["status"] in ("IN_QUEUE", "IN_PROGRESS"):
            if time.monotonic() > deadline:
                request("POST", f"{queue_url}/cancel/{job['id']}", None, auth, 5)
                raise TimeoutError(f"Execution timeout on {name} after {_seconds(timeout)}s")
            time.sleep(POLL_INTERVAL_S)
            _, data = request("GET", f"{queue_url}/status/{job['id']}", None, auth, 10)
            job = json.loads(data)
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            raise TimeoutError(f"Execution timeout on {name} after {_seconds(timeout)}s"
                               ) from None
        raise ConnectionError(f"Failed to connect to endpoint {name} ({queue_url}): {exc}"
                              ) from None
    if job["status"] == "TIMED_OUT":
        raise TimeoutError(f"Execution timeout on {name} after {_seconds(timeout)}s "
                           f"({job.get('error')})")
    if job["status"] == "CANCELLED":
        raise RuntimeError(f"job {job['id']} on endpoint {name} was cancelled")
    return job


def _error_details(error: str) -> dict[str, Any]:
    """Runpod workers report exceptions as a JSON string; other failures are plain text."""
    try:
        details = json.loads(error)
    except ValueError:
        return {"error_message": error}
    return details if isinstance(details, dict) else {"error_message": error}


def call_live(
    endpoint: LiveEndpoint,
    shipped: Callable[[], tuple[str, str]],
    function_name: str,
    module_name: str,
    timeout_s: float | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a shipped function as a job on a live queue endpoint."""
    timeout = timeout_s or DEFAULT_TIMEOUT_S
    payload, function_hash = shipped()
    job_input = {
        "function_name": function_name, "function_hash": function_hash, "session": SESSION,
        "args": serialization.encode((args, kwargs), module_name), "function": payload,
    }
    platform, url = endpoint.target()
    queue_url = url.replace("/ep/", "/v2/", 1)
    body = {"input": job_input, "policy": {"executionTimeout": int(timeout * 1000)}}
    job = _run_job(platform.auth, queue_url, body, timeout, endpoint.name)
    if job["status"] == "COMPLETED":
        output = job.get("output") or {}
        _replay_output(output.get("output") or [])
        return serialization.decode(output["result"])
    details = _error_details(job.get("error") or "job failed")
    _replay_output(details.get("output") or [])
    raise serialization.rebuild_exception(
        details.get("exception"), details.get("error_type", "RemoteExecutionError"),
        details.get("error_message", ""), details.get("error_traceback", ""),
    )


def call_deployed(
    resource: ServerlessResource,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a deployed queue endpoint's function with plain JSON keyword arguments."""
    bound = inspect.signature(func).bind(*args, **kwargs)  # TypeError for wrong arguments
    values = dict(bound.arguments)
    _json_or_type_error(func, values)
    queue_url, auth = endpoint_url(resource)
    timeout = resource.execution_timeout_s or DEFAULT_TIMEOUT_S
    body = {"input": {"function": func.__name__, **values},
            "policy": {"executionTimeout": int(timeout * 1000)}}
    job = _run_job(auth, queue_url, body, timeout, resource.name)
    if job["status"] == "COMPLETED":
        return job.get("output")
    details = _error_details(job.get("error") or "job failed")
    if "error_type" in details:
        _raise_for(func, resource.name, 500, json.dumps(
            {"error": details.get("error_message", ""), "error_type": details["error_type"]}
        ).encode())
    raise serialization.RemoteExecutionError(
        f"Remote execution on '{resource.name}' failed: {details.get('error_message')}"
    )
