"""A resource's endpoint on the running platform: finding it, removing it, and a handle on
its queue API.

The original's ``resource.endpoint`` is a runpod SDK ``Endpoint`` bound to Runpod's cloud;
``EndpointHandle`` offers its common methods against the platform's queue API (the same
routes and shapes), authorised with the platform token. Stubs import the resource models,
so the stub helpers used here are imported where they are needed.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from runpod_flash.control import Platform, PlatformError, deployed_endpoint_id, find_running
from runpod_flash.http.blocking import request

if TYPE_CHECKING:
    from runpod_flash.resources.serverless import ServerlessResource
    from runpod_flash.stubs.live import LiveEndpoint

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
POLL_INTERVAL_S = 0.2
REQUEST_TIMEOUT_S = 30.0


def job_body(request_input: dict[str, Any]) -> dict[str, Any]:
    """The request body for `/run` and `/runsync`: a dict with ``input`` is sent as it is (it
    may carry ``webhook`` or ``policy``); any other dict becomes the job's input."""
    return request_input if "input" in request_input else {"input": request_input}


class JobHandle:
    """One submitted job (the runpod SDK's ``Job``): its status, output and cancellation."""

    def __init__(self, endpoint: EndpointHandle, job_id: str) -> None:
        self.endpoint = endpoint
        self.job_id = job_id

    def fetch(self) -> dict[str, Any]:
        """The job as the queue API shows it now (id, status, output or error, timings)."""
        return self.endpoint.job(self.job_id)

    def status(self) -> str:
        return str(self.fetch()["status"])

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Poll until the job ends and return it; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.fetch()
        while job["status"] not in FINAL_STATES:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {self.job_id} on endpoint {self.endpoint.name} did not finish within "
                    f"{timeout:g}s (it is {job['status']}); wait longer or cancel it"
                )
            time.sleep(POLL_INTERVAL_S)
            job = self.fetch()
        return job

    def output(self, timeout: float = 0) -> Any:
        """The job's output; with `timeout` > 0, waits that long for the job to end first."""
        return (self.wait(timeout) if timeout > 0 else self.fetch()).get("output")

    def cancel(self) -> dict[str, Any]:
        return self.endpoint.cancel(self.job_id)


class EndpointHandle:
    """The queue API of one endpoint: `{platform}/v2/{endpoint_id}/...`."""

    def __init__(self, endpoint_id: str, platform: Platform, name: str) -> None:
        self.endpoint_id = endpoint_id
        self.name = name
        self.url = f"{platform.url}/v2/{endpoint_id}"
        self.headers = platform.auth

    def __repr__(self) -> str:
        return f"EndpointHandle({self.endpoint_id!r}, url={self.url!r})"

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        payload = None if body is None else json.dumps(body).encode()
        try:
            status, data = request(method, self.url + path, payload, self.headers,
                                   REQUEST_TIMEOUT_S)
        except OSError as exc:
            raise ConnectionError(
                f"Failed to connect to endpoint {self.name} ({self.url}): {exc}"
            ) from None
        if status != 200:
            raise RuntimeError(f"HTTP error from endpoint {self.name}: {status} - "
                               f"{data[:500].decode(errors='replace')}")
        return json.loads(data)

    def run(self, request_input: dict[str, Any]) -> JobHandle:
        """Queue a job (`/run`) and return its handle at once."""
        return JobHandle(self, self._call("POST", "/run", job_body(request_input))["id"])

    def runsync(self, request_input: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Run a job and return it once it ended (`/runsync`, then status polls past its
        wait); a job still running after `timeout` seconds is cancelled (TimeoutError)."""
        from runpod_flash.stubs.queue import _run_job

        return _run_job(self.headers, self.url, job_body(request_input), timeout, self.name)

    def run_sync(self, request_input: dict[str, Any], timeout: float = 86400) -> Any:
        """The runpod SDK's ``run_sync``: the job's output (None when it failed)."""
        return self.runsync(request_input, timeout).get("output")

    def job(self, job_id: str) -> dict[str, Any]:
        """One job as the queue API shows it (`/status/{job_id}`)."""
        return self._call("GET", f"/status/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/cancel/{job_id}")

    def health(self) -> dict[str, Any]:
        """Job and worker counts (`/health`; `ServerlessHealth` reads it)."""
        return self._call("GET", "/health")

    def purge_queue(self) -> dict[str, Any]:
        """Drop the jobs still waiting in the queue (running ones go on)."""
        return self._call("POST", "/purge-queue")


def _provisioned_live(resource: ServerlessResource) -> list[tuple[LiveEndpoint, str]]:
    """This process's provisioned live endpoints of `resource` with their ids (one per
    dependency set its functions use); the platform names live endpoints when provisioning."""
    from runpod_flash.stubs import live

    return live.provisioned(resource.config_hash)


def _endpoint_id(resource: ServerlessResource) -> str | None:
    if resource.is_live:
        return next((endpoint_id for _, endpoint_id in _provisioned_live(resource)), None)
    return resource.id or deployed_endpoint_id(resource.name)


def locate(resource: ServerlessResource) -> tuple[Platform, dict[str, Any]] | None:
    """The running platform and its summary of the endpoint serving `resource`, or None
    when no platform runs or it has no such endpoint."""
    platform = find_running()
    endpoint_id = _endpoint_id(resource)
    if platform is None or endpoint_id is None:
        return None
    try:
        summary = platform.call("GET", f"/api/v1/endpoints/{endpoint_id}")
    except PlatformError:
        return None
    return (platform, summary) if summary.get("kind") == _kind(resource) else None


def _kind(resource: ServerlessResource) -> str:
    return "live" if resource.is_live else "deployed"


def remove_endpoint(resource: ServerlessResource) -> dict[str, Any]:
    """Remove the endpoint serving `resource`; the answer has the original's shape:
    ``{success, name, endpoint_id, message}``."""
    found = locate(resource)
    if found is None:
        return {"success": False, "name": resource.name, "endpoint_id": resource.id,
                "message": f"Resource {resource.resource_key} is not deployed; "
                           "nothing to undeploy"}
    platform, summary = found
    endpoint_id = summary["id"]
    try:
        platform.call("DELETE", f"/api/v1/endpoints/{endpoint_id}")
    except PlatformError as exc:
        return {"success": False, "name": resource.name, "endpoint_id": endpoint_id,
                "message": f"Failed to undeploy '{resource.name}' ({endpoint_id}): {exc}"}
    for endpoint, live_id in _provisioned_live(resource):
        if live_id == endpoint_id:
            endpoint.forget()  # the next call of its functions provisions a new one
    return {"success": True, "name": resource.name, "endpoint_id": endpoint_id,
            "message": f"Successfully undeployed '{resource.name}' ({endpoint_id})"}
