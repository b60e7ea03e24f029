"""The original API's resource surface: its fields, module paths, models and resource methods
(no platform here: control and queue calls are answered by fakes)."""

from __future__ import annotations

import asyncio
import importlib
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

import runpod_flash
from runpod_flash import resources
from runpod_flash.control import Platform, PlatformError
from runpod_flash.resources import (
    CpuLiveServerless,
    CpuServerlessEndpoint,
    CudaVersion,
    DeployableResource,
    GpuGroup,
    GpuType,
    JobOutput,
    LiveServerless,
    LoadBalancerSlsResource,
    NetworkVolume,
    ServerlessEndpoint,
    ServerlessHealth,
    ServerlessResource,
    Status,
)
from runpod_flash.resources import endpoint as endpoint_module
from runpod_flash.stubs import live

ALL_CLASSES = [
    resources.ServerlessEndpoint,
    resources.CpuServerlessEndpoint,
    resources.LiveServerless,
    resources.CpuLiveServerless,
    resources.LoadBalancerSlsResource,
    resources.CpuLoadBalancerSlsResource,
    resources.LiveLoadBalancer,
    resources.CpuLiveLoadBalancer,
]
# The original's fields this API lacked, with the original's defaults.
ORIGINAL_FIELDS: dict[str, Any] = {
    "allowedCudaVersions": "",
    "locations": None,
    "networkVolumeId": None,
    "computeType": None,
    "workersPFBTarget": 0,
    "flashEnvironmentId": None,
    "hubRelease": None,
    "repo": None,
    "aiKey": None,
    "activeBuildid": None,
    "createdAt": None,
    "userId": None,
}
RUNTIME_VALUES = {
    "aiKey": "k", "userId": "u", "createdAt": "2026-01-01", "activeBuildid": "b",
    "computeType": "GPU", "hubRelease": "r", "repo": "owner/repo",
}


# --- fields --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_original_fields_exist_with_the_original_defaults(cls: type[ServerlessResource]) -> None:
    r = cls(name="w")
    assert {name: getattr(r, name) for name in ORIGINAL_FIELDS} == ORIGINAL_FIELDS


def test_original_fields_are_accepted() -> None:
    r = ServerlessEndpoint(
        name="w", locations="EU-RO-1", workersPFBTarget=2, flashEnvironmentId="env-1",
        allowedCudaVersions="12.4", **RUNTIME_VALUES,
    )
    assert (r.locations, r.workersPFBTarget, r.flashEnvironmentId) == ("EU-RO-1", 2, "env-1")
    assert r.aiKey == "k" and r.repo == "owner/repo"


def test_unknown_names_still_get_a_hint() -> None:
    with pytest.raises(ValidationError, match="did you mean 'workersPFBTarget'"):
        ServerlessEndpoint(name="w", workersPFBTarge=1)
    with pytest.raises(ValidationError, match="did you mean 'allowedCudaVersions'"):
        ServerlessEndpoint(name="w", allowedCudaVersion="12.4")
    with pytest.raises(ValidationError, match=r"workersPFBTarget must be >= 0 \(got -1\)"):
        ServerlessEndpoint(name="w", workersPFBTarget=-1)


def test_original_only_fields_leave_the_platform_spec_alone() -> None:
    plain = ServerlessEndpoint(name="w")
    loaded = ServerlessEndpoint(
        name="w", locations="EU-RO-1", workersPFBTarget=3, flashEnvironmentId="env",
        cudaVersions=[CudaVersion.V12_4], **RUNTIME_VALUES,
    )
    assert loaded.platform_spec() == plain.platform_spec()


def test_runtime_fields_and_ids_are_not_configuration() -> None:
    base = ServerlessEndpoint(name="w", networkVolume=NetworkVolume(name="data"))
    again = ServerlessEndpoint(
        name="w", networkVolume=NetworkVolume(name="data", id="data"), **RUNTIME_VALUES
    )
    assert again.networkVolumeId == "data"
    assert again.config_hash == base.config_hash
    assert ServerlessEndpoint(name="w", locations="X").config_hash != base.config_hash


def test_an_original_dump_validates_and_round_trips() -> None:
    r = LiveServerless(name="w", cudaVersions=["12.1", "12.4"], **RUNTIME_VALUES)
    dumped = r.model_dump(mode="json")
    assert dumped["allowedCudaVersions"] == "12.1,12.4"
    again = LiveServerless.model_validate(dumped)
    assert again == r
    assert again.config_hash == r.config_hash


# --- CUDA versions ------------------------------------------------------------------------------


def test_allowed_cuda_versions_follow_cuda_versions() -> None:
    r = ServerlessEndpoint(name="w", cudaVersions=[CudaVersion.V12_1, CudaVersion.V11_8])
    assert r.allowedCudaVersions == "12.1,11.8"
    r = ServerlessEndpoint(name="w", allowedCudaVersions="12.4, 12.8")
    assert r.cudaVersions == [CudaVersion.V12_4, CudaVersion.V12_8]
    assert r.allowedCudaVersions == "12.4,12.8"
    same = ServerlessEndpoint(name="w", cudaVersions=["12.8", "12.4"],
                              allowedCudaVersions="12.4,12.8")
    assert same.allowedCudaVersions == "12.8,12.4"


def test_allowed_cuda_versions_errors_name_the_fix() -> None:
    with pytest.raises(ValidationError, match="does not match cudaVersions; set only one"):
        ServerlessEndpoint(name="w", cudaVersions=["12.1"], allowedCudaVersions="12.4")
    with pytest.raises(ValidationError, match=r"unknown CUDA version; use some of: 11\.8"):
        ServerlessEndpoint(name="w", allowedCudaVersions="99.9")


@pytest.mark.parametrize("cls", [CpuServerlessEndpoint, CpuLiveServerless])
def test_cpu_classes_have_no_allowed_cuda_versions(cls: type[ServerlessResource]) -> None:
    assert cls(name="w", cudaVersions=["12.4"]).allowedCudaVersions == ""
    assert cls(name="w", allowedCudaVersions="12.4").allowedCudaVersions == ""
    cpu_gpu_class = ServerlessEndpoint(name="w", instanceIds=["cpu3c-1-2"], cudaVersions=["12.4"])
    assert cpu_gpu_class.allowedCudaVersions == ""


# --- GPUs, images, str ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gpus", [[GpuGroup.ANY], [GpuType.ANY], ["any"], [GpuGroup.ANY, GpuGroup.ADA_24]]
)
def test_any_gpu_expands_to_every_pool(gpus: list[Any]) -> None:
    r = LiveServerless(name="w", gpus=gpus)
    assert r.gpus == GpuGroup.all()
    assert r.gpuIds == ",".join(group.value for group in GpuGroup.all())


def test_is_gpu_type() -> None:
    assert GpuType.is_gpu_type("NVIDIA H200")
    assert GpuType.is_gpu_type("any")
    assert not GpuType.is_gpu_type("ADA_24")
    assert not GpuType.is_gpu_type("NVIDIA H900")


def test_live_image_cannot_be_reassigned() -> None:
    r = LiveServerless(name="w")
    locked = r.imageName
    with pytest.warns(UserWarning, match="always runs runpod/flash:latest"):
        r.imageName = "me/custom:1"
    assert r.imageName == locked
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r.imageName = locked  # the same image: nothing to say
        plain = LoadBalancerSlsResource(name="w")
        plain.imageName = "me/custom:1"
    assert plain.imageName == "me/custom:1"


def test_str_has_the_original_shape() -> None:
    assert str(LiveServerless(name="w")) == "LiveServerless:None"
    assert str(ServerlessEndpoint(name="w", id="ep-1")) == "ServerlessEndpoint:ep-1"
    assert str(NetworkVolume(name="v", id="v")) == "NetworkVolume:v"
    assert isinstance(LiveServerless(name="w"), DeployableResource)
    assert isinstance(NetworkVolume(name="v"), DeployableResource)


def test_network_volume_id_alone_names_the_volume() -> None:
    r = CpuServerlessEndpoint(name="w", networkVolumeId="models")
    assert r.networkVolume is not None and r.networkVolume.name == "models"
    assert r.platform_spec()["networkVolume"] == {"name": "models", "size": 100}


# --- module paths and exports --------------------------------------------------------------------

ORIGINAL_MODULES = {
    "runpod_flash.core.resources": [
        "BaseResource", "DeployableResource", "JobOutput", "ServerlessResource",
        "ServerlessEndpoint", "LiveServerless", "NetworkVolume", "PodTemplate", "GpuGroup",
    ],
    "runpod_flash.core.resources.serverless": [
        "ServerlessResource", "ServerlessEndpoint", "JobOutput", "CudaVersion", "ServerlessType",
        "ServerlessScalerType", "Status", "WorkersHealth", "JobsHealth", "ServerlessHealth",
    ],
    "runpod_flash.core.resources.cpu": ["CpuInstanceType"],
    "runpod_flash.core.resources.gpu": ["GpuGroup", "GpuType"],
    "runpod_flash.core.resources.live_serverless": [
        "LiveServerless", "CpuLiveServerless", "LiveLoadBalancer", "CpuLiveLoadBalancer",
    ],
    "runpod_flash.core.resources.load_balancer_sls_resource": [
        "LoadBalancerSlsResource", "CpuLoadBalancerSlsResource",
    ],
    "runpod_flash.core.resources.serverless_cpu": ["CpuServerlessEndpoint"],
    "runpod_flash.core.resources.network_volume": ["NetworkVolume", "DataCenter"],
    "runpod_flash.core.resources.template": ["PodTemplate", "KeyValuePair"],
}


@pytest.mark.parametrize("module_name", sorted(ORIGINAL_MODULES))
def test_original_module_paths_re_export_ours(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in ORIGINAL_MODULES[module_name]:
        assert getattr(module, name) is getattr(resources, name), name
    assert all(getattr(resources, name) is getattr(module, name) for name in module.__all__
               if hasattr(resources, name))


def test_package_exports_the_worker_defaults() -> None:
    assert (runpod_flash.DEFAULT_WORKERS_MIN, runpod_flash.DEFAULT_WORKERS_MAX) == (0, 1)
    assert ServerlessEndpoint(name="w").workersMax == runpod_flash.DEFAULT_WORKERS_MAX


def test_key_value_pairs_from_a_dict() -> None:
    pairs = resources.KeyValuePair.from_dict({"A": "1", "B": "2"})
    assert [(p.key, p.value) for p in pairs] == [("A", "1"), ("B", "2")]


# --- job and health models ------------------------------------------------------------------------


def test_job_output_reads_a_job() -> None:
    out = JobOutput(id="j", workerId="w1", status="COMPLETED", delayTime=3, executionTime=9,
                    output={"x": 1})
    assert (out.output, out.error) == ({"x": 1}, "")
    cancelled = JobOutput(id="j", status="CANCELLED")  # never reached a worker
    assert (cancelled.workerId, cancelled.delayTime) == ("", 0)


def test_health_status() -> None:
    counts = {"completed": 1, "failed": 0, "inProgress": 0, "inQueue": 2, "retried": 0}
    idle = {"idle": 0, "initializing": 0, "ready": 0, "running": 0, "throttled": 0,
            "unhealthy": 0}
    health = ServerlessHealth(workers=idle, jobs=counts)
    assert health.workers.status is Status.UNKNOWN and not health.is_ready
    health = ServerlessHealth(workers={**idle, "initializing": 1}, jobs=counts)
    assert health.workers.status is Status.INITIALIZING
    health = ServerlessHealth(workers={**idle, "ready": 1, "idle": 1}, jobs=counts)
    assert health.is_ready


# --- resource methods, against fakes -----------------------------------------------------------


@dataclass(frozen=True)
class FakePlatform(Platform):
    """A control API that knows some endpoints and records what it is asked."""

    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30.0,
             raw: bytes | None = None) -> dict[str, Any]:
        self.calls.append((method, path))
        endpoint_id = path.rsplit("/", 1)[-1]
        if endpoint_id not in self.endpoints:
            raise PlatformError(f"platform {method} {path} answered 404")
        if method == "DELETE":
            return {"deleted": self.endpoints.pop(endpoint_id)["id"]}
        return self.endpoints[endpoint_id]


def _summary(endpoint_id: str, kind: str, queue: bool = True) -> dict[str, Any]:
    return {"id": endpoint_id, "kind": kind, "status": "ready",
            "path": f"/{'v2' if queue else 'ep'}/{endpoint_id}"}


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch) -> FakePlatform:
    fake = FakePlatform("http://127.0.0.1:9", "tok")
    monkeypatch.setattr(endpoint_module, "find_running", lambda: fake)
    return fake


@pytest.fixture
def no_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_module, "find_running", lambda: None)
    monkeypatch.setattr("runpod_flash.resources.template.find_running", lambda: None)


def test_nothing_is_deployed_without_a_platform(no_platform: None) -> None:
    r = ServerlessEndpoint(name="jobs")
    assert r.is_deployed() is False
    with pytest.raises(ValueError, match="'jobs' is not deployed; run `flash deploy`"):
        _ = r.url
    with pytest.raises(ValueError, match="not deployed"):
        _ = r.endpoint
    with pytest.raises(ValueError, match="call one of its @remote functions first"):
        _ = LiveServerless(name="w").url
    result = asyncio.run(r.undeploy())
    assert result["success"] is False and "is not deployed" in result["message"]


def test_load_balanced_resources_have_no_queue_handle(platform: FakePlatform) -> None:
    with pytest.raises(TypeError, match="load-balanced: it has no job queue"):
        _ = LoadBalancerSlsResource(name="api").endpoint


def test_deployed_resource_methods(platform: FakePlatform) -> None:
    platform.endpoints["jobs"] = _summary("jobs", "deployed")
    r = ServerlessEndpoint(name="jobs")
    assert r.is_deployed()
    assert r.url == "http://127.0.0.1:9/v2/jobs"
    assert (r.id, str(r)) == ("jobs", "ServerlessEndpoint:jobs")
    handle = r.endpoint
    assert (handle.endpoint_id, handle.url) == ("jobs", "http://127.0.0.1:9/v2/jobs")
    assert handle.headers == {"Authorization": "Bearer tok"}
    result = asyncio.run(r.undeploy())
    assert result == {"success": True, "name": "jobs", "endpoint_id": "jobs",
                      "message": "Successfully undeployed 'jobs' (jobs)"}
    assert (r.id, r.endpoint_url) == (None, None)
    assert not r.is_deployed()


def test_a_live_endpoint_of_another_kind_does_not_count(platform: FakePlatform) -> None:
    platform.endpoints["jobs"] = _summary("jobs", "live")
    assert not ServerlessEndpoint(name="jobs").is_deployed()


def test_live_resource_methods_use_the_provisioned_endpoint(
    platform: FakePlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = LiveServerless(name="w")
    monkeypatch.setattr(live, "_endpoints", {})
    assert not r.is_deployed()
    provisioned = live.endpoint_for(r, ["numpy"], [], ("x.py", 1))
    provisioned._target = (platform, "http://127.0.0.1:9/v2/live-w-1234")
    platform.endpoints["live-w-1234"] = _summary("live-w-1234", "live")
    assert r.is_deployed()
    assert r.endpoint.endpoint_id == "live-w-1234"
    assert asyncio.run(r.undeploy())["success"]
    assert provisioned.cached_target() is None  # the next call provisions a new one
    assert ("DELETE", "/api/v1/endpoints/live-w-1234") in platform.calls


class FakeQueue:
    """The queue API of one endpoint: jobs finish after `polls` status reads."""

    def __init__(self, polls: int = 2) -> None:
        self.polls = polls
        self.bodies: list[Any] = []
        self.reads = 0

    def __call__(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                 timeout: float) -> tuple[int, bytes]:
        route = url.split("/v2/jobs", 1)[1]
        if body is not None:
            self.bodies.append(json.loads(body))
        if route == "/run":
            answer: dict[str, Any] = {"id": "j1", "status": "IN_QUEUE"}
        elif route.startswith("/status/"):
            self.reads += 1
            done = self.reads >= self.polls
            answer = {"id": "j1", "status": "COMPLETED" if done else "IN_PROGRESS"}
            if done:
                answer.update(workerId="w1", delayTime=1, executionTime=2, output={"ok": True})
        elif route == "/health":
            answer = {"jobs": {}, "workers": {}}
        else:
            return 404, b"no such route"
        return 200, json.dumps(answer).encode()


def test_endpoint_handle_runs_and_waits(
    platform: FakePlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(endpoint_module, "POLL_INTERVAL_S", 0)
    queue = FakeQueue(polls=3)
    monkeypatch.setattr(endpoint_module, "request", queue)
    platform.endpoints["jobs"] = _summary("jobs", "deployed")
    r = ServerlessEndpoint(name="jobs")
    out = asyncio.run(r.run({"x": 1}))
    assert (out.id, out.status, out.output, out.workerId) == ("j1", "COMPLETED", {"ok": True}, "w1")
    assert queue.bodies == [{"input": {"x": 1}}]
    job = r.endpoint.run({"input": {"x": 2}, "webhook": "http://hook"})
    assert queue.bodies[-1] == {"input": {"x": 2}, "webhook": "http://hook"}
    assert job.output(timeout=5) == {"ok": True}
    assert r.endpoint.health() == {"jobs": {}, "workers": {}}
    with pytest.raises(RuntimeError, match="HTTP error from endpoint jobs: 404"):
        r.endpoint.purge_queue()


def test_job_wait_times_out(platform: FakePlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_module, "POLL_INTERVAL_S", 0)
    monkeypatch.setattr(endpoint_module, "request", FakeQueue(polls=10**9))
    platform.endpoints["jobs"] = _summary("jobs", "deployed")
    job = ServerlessEndpoint(name="jobs").endpoint.run({"x": 1})
    with pytest.raises(TimeoutError, match=r"did not finish within 0\.01s"):
        job.wait(0.01)


def test_network_volume_without_a_platform(no_platform: None) -> None:
    volume = NetworkVolume(name="Models")
    assert not volume.is_created
    assert not volume.is_deployed()
    with pytest.raises(NotImplementedError, match="flash volume delete Models"):
        asyncio.run(volume.undeploy())
