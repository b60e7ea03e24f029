"""Queue-based calls: each call is a job on the endpoint's durable queue (`/v2/{id}/runsync`).

Live resources ship the function like live load-balanced calls do (same errors, output and
timeouts; the output is replayed unless `live.REPLAY_OUTPUT` is off); deployed ones send
plain JSON keyword arguments naming the function to run.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from runpod_flash import config, serialization
from runpod_flash.http.blocking import request
from runpod_flash.http.errors import ConnectFailed
from runpod_flash.resources import ServerlessResource
from runpod_flash.stubs.http_route import _json_or_type_error, _raise_for, endpoint_url
from runpod_flash.stubs.live import (
    SESSION,
    LiveEndpoint,
    PayloadTooLarge,
    _replay_output,
    _seconds,
)

logger = logging.getLogger("runpod_flash")

DEFAULT_TIMEOUT_S = 30.0
MAX_RUNSYNC_WAIT_MS = 300_000
POLL_INTERVAL_S = 0.2


Target = tuple[dict[str, str], str]  # (authorization headers, the endpoint's queue URL)


def _run_job(auth: dict[str, str], queue_url: str, body: dict[str, Any], timeout: float,
             name: str, call: str = "a job", reprovision: Callable[[], Target] | None = None
             ) -> dict[str, Any]:
    """Submit with runsync and wait for a final state (polling past runsync's wait).

    `reprovision`, for live endpoints, gives a fresh target once when the submission
    reached no endpoint (the platform restarted, or exited after being idle): nothing ran.
    """
    payload = json.dumps(body).encode()
    limit = config.queue_input_limit(sync=True)
    if len(payload) > limit:
        raise _too_large(call, name, len(payload), limit)
    wait_ms = min(MAX_RUNSYNC_WAIT_MS, max(1000, int(timeout * 1000)))
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                status, data = request("POST", f"{queue_url}/runsync?wait={wait_ms}", payload,
                                       auth, timeout + 5)
            except ConnectFailed:
                if reprovision is None:
                    raise
                status, data = 0, b""
            if status not in (0, 404) or reprovision is None:
                break
            auth, queue_url = reprovision()
            reprovision = None
        if status == 413:  # the platform's setting is lower than this process's
            raise _too_large(call, name, len(payload), None)
        if status != 200:
            raise RuntimeError(f"HTTP error from endpoint {name}: {status} - "
                               f"{data[:500].decode(errors='replace')}")
        job = json.loads(data)
        while job["status"] in ("IN_QUEUE", "IN_PROGRESS"):
            if time.monotonic() > deadline:
                request("POST", f"{queue_url}/cancel/{job['id']}", None, auth, 5)
                raise TimeoutError(f"Execution timeout on {name} after {_seconds(timeout)}s")
            time.sleep(POLL_INTERVAL_S)
            status, data = request("GET", f"{queue_url}/status/{job['id']}", None, auth, 10)
            if status != 200:
                raise RuntimeError(f"job {job['id']} on endpoint {name} was lost (its status "
                                   f"answered {status}: {data[:200].decode(errors='replace')});"
                                   " the platform may have restarted while it ran")
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


def _too_large(call: str, name: str, size: int, limit: int | None) -> PayloadTooLarge:
    return PayloadTooLarge(config.over_limit(
        f"The input of {call} on queue endpoint {name}", size, limit,
        config.queue_input_setting(sync=True),
    ))


def _error_details(error: str) -> dict[str, Any]:
    """Runpod workers report exceptions as a JSON string; other failures are plain text."""
    try:
        details = json.loads(error)
    except ValueError:
        return {"error_message": error}
    return details if isinstance(details, dict) else {"error_message": error}


def _live_result(job: dict[str, Any]) -> Any:
    """A live job's value, or its remote exception raised here (output replayed either way)."""
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


def _live_target(endpoint: LiveEndpoint, fresh: bool = False) -> Target:
    """Where a live endpoint takes jobs; `fresh` provisions it again (as live LB calls do
    when the platform restarted)."""
    if fresh:
        endpoint.forget()
    platform, url = endpoint.target()
    return platform.auth, url.replace("/ep/", "/v2/", 1)


def _run_live(endpoint: LiveEndpoint, job_input: dict[str, Any], timeout: float, call: str,
              affinity: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": job_input,
                            "policy": {"executionTimeout": int(timeout * 1000)}}
    if affinity:
        body["affinity"] = affinity
    return _run_job(*_live_target(endpoint), body, timeout, endpoint.name, call,
                    reprovision=lambda: _live_target(endpoint, fresh=True))


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
    return _live_result(_run_live(endpoint, job_input, timeout, f"{function_name}()"))


class InstanceRef:
    """One handle's instance on the workers: its id, constructor arguments, and the worker
    that holds it (its calls are queued for that worker while it serves)."""

    def __init__(self, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.cls = cls
        self.args = args
        self.kwargs = kwargs
        self.instance_id = f"{cls.__name__}_{uuid.uuid4().hex[:8]}"
        self.worker_id: str | None = None
        self.lock = threading.Lock()  # the first call creates the instance; others wait
        self._constructor: str | None = None

    def constructor(self) -> str:
        """The encoded constructor arguments (encoded once)."""
        if self._constructor is None:
            self._constructor = serialization.encode((self.args, self.kwargs),
                                                     self.cls.__module__)
        return self._constructor

    def ran_on(self, job: dict[str, Any]) -> None:
        """Note where a completed call ran; a new worker means a new instance."""
        worker = job.get("workerId")
        if job["status"] != "COMPLETED" or not worker:
            return
        if self.worker_id is not None and worker != self.worker_id:
            logger.warning(
                "%s instance %s was created again on worker %s: worker %s, which held it, "
                "is gone (the instance's state starts over)",
                self.cls.__name__, self.instance_id, worker, self.worker_id,
            )
        self.worker_id = worker


def call_live_method(
    endpoint: LiveEndpoint,
    shipped: Callable[[], tuple[str, str]],
    ref: InstanceRef,
    method: str,
    timeout_s: float | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run a method of a shipped class on the handle's instance, as a live queue job."""
    timeout = timeout_s or DEFAULT_TIMEOUT_S
    payload, class_hash = shipped()
    job_input = {
        "class_name": ref.cls.__name__, "class_hash": class_hash, "session": SESSION,
        "instance_id": ref.instance_id, "constructor": ref.constructor(),
        "method_name": method, "class": payload,
        "args": serialization.encode((args, kwargs), ref.cls.__module__),
    }
    job = _run_live(endpoint, job_input, timeout, f"{ref.cls.__name__}.{method}()",
                    ref.worker_id)
    ref.ran_on(job)
    return _live_result(job)


def _deployed_result(resource: ServerlessResource, func: Callable[..., Any],
                     job: dict[str, Any]) -> Any:
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


def _run_deployed(resource: ServerlessResource, job_input: dict[str, Any], call: str,
                  affinity: str | None = None) -> dict[str, Any]:
    queue_url, auth = endpoint_url(resource)
    timeout = resource.execution_timeout_s or DEFAULT_TIMEOUT_S
    body: dict[str, Any] = {"input": job_input,
                            "policy": {"executionTimeout": int(timeout * 1000)}}
    if affinity:
        body["affinity"] = affinity
    return _run_job(auth, queue_url, body, timeout, resource.name, call)


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
    job = _run_deployed(resource, {"function": func.__name__, **values}, f"{func.__name__}()")
    return _deployed_result(resource, func, job)


def call_deployed_method(
    resource: ServerlessResource,
    ref: InstanceRef,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """A deployed class endpoint's method: `{"method": ..., ...kwargs}` in plain JSON."""
    func = getattr(ref.cls, method)
    bound = inspect.signature(func).bind(None, *args, **kwargs)  # None stands for self
    values = dict(list(bound.arguments.items())[1:])
    _json_or_type_error(func, values)
    _json_or_type_error(ref.cls, {"constructor arguments": [ref.args, ref.kwargs]})
    job_input = {
        "function": ref.cls.__name__, "method": method, "instance_id": ref.instance_id,
        "constructor_args": list(ref.args), "constructor_kwargs": ref.kwargs, **values,
    }
    job = _run_deployed(resource, job_input, f"{ref.cls.__name__}.{method}()", ref.worker_id)
    ref.ran_on(job)
    return _deployed_result(resource, func, job)
