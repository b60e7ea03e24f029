"""Serverless resource models: what an endpoint needs, validated when it is declared.

Field names stay camelCase because user code written for the original API passes them as
keyword arguments. Errors are raised while the object is built, so a bad config fails at the
line that wrote it rather than at deploy time.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import os
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .base import DeployableResource
from .endpoint import EndpointHandle, locate, remove_endpoint
from .enums import (
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    ServerlessScalerType,
    ServerlessType,
)
from .jobs import JobOutput
from .template import NetworkVolume, PodTemplate

if TYPE_CHECKING:
    from runpod_flash.control import Platform

IMAGE_TAG_ENV = "FLASH_IMAGE_TAG"
DEFAULT_WORKERS_MIN = 0
DEFAULT_WORKERS_MAX = 1
DEFAULT_RUNSYNC_TIMEOUT_S = 60.0

_MINIMUMS: dict[str, int] = {
    "workersMin": 0,
    "workersMax": 1,
    "idleTimeout": 0,
    "executionTimeoutMs": 0,
    "scalerValue": 1,
    "gpuCount": 0,
    "workersPFBTarget": 0,
}
# Filled in by the original's cloud; accepted so its dumps validate, never used here.
RUNTIME_FIELDS = frozenset(
    {"activeBuildid", "aiKey", "computeType", "createdAt", "hubRelease", "repo", "userId"}
)
# What the config hash leaves out: ids the platform assigns (the volume's too) and where the
# endpoint answers, none of which is configuration.
_HASH_EXCLUDED: dict[str, Any] = {
    **dict.fromkeys({"id", "endpoint_url", "networkVolumeId", *RUNTIME_FIELDS}, True),
    "networkVolume": {"id"},
}
_CONFIG = ConfigDict(validate_by_name=True, validate_default=True, extra="forbid")


def _live_image(env_var: str, repository: str) -> str:
    """The image a live class runs: ``$<env_var>``, else ``<repository>:$FLASH_IMAGE_TAG``."""
    tag = os.environ.get(IMAGE_TAG_ENV) or "latest"
    return os.environ.get(env_var) or f"{repository}:{tag}"


class ServerlessResource(DeployableResource):
    """Common fields and rules of every serverless endpoint configuration."""

    model_config = _CONFIG

    # (environment variable, repository) of the locked image; None for non-live classes.
    _live_image_source: ClassVar[tuple[str, str] | None] = None
    # Cpu* classes never take GPUs.
    _cpu_only: ClassVar[bool] = False

    name: str
    imageName: str = ""
    gpus: list[GpuGroup | GpuType] = Field(default_factory=lambda: [GpuGroup.ANY])
    gpuIds: str = ""
    gpuCount: int = 1
    cudaVersions: list[CudaVersion] = Field(default_factory=list)
    allowedCudaVersions: str = ""
    instanceIds: list[CpuInstanceType] | None = None
    workersMin: int = DEFAULT_WORKERS_MIN
    workersMax: int = DEFAULT_WORKERS_MAX
    workersPFBTarget: int = 0
    idleTimeout: int = 60
    executionTimeoutMs: int = 0
    scalerType: ServerlessScalerType = ServerlessScalerType.QUEUE_DELAY
    scalerValue: int = 4
    flashboot: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    networkVolume: NetworkVolume | None = None
    networkVolumeId: str | None = None
    datacenter: DataCenter = DataCenter.EU_RO_1
    locations: str | None = None
    template: PodTemplate | None = None
    templateId: str | None = None
    flashEnvironmentId: str | None = None
    type: ServerlessType = ServerlessType.QB
    endpoint_url: str | None = None
    activeBuildid: str | None = None
    aiKey: str | None = None
    computeType: str | None = None
    createdAt: str | None = None
    hubRelease: str | None = None
    repo: str | None = None
    userId: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_fields(cls, data: Any) -> Any:
        """Name the closest real field, so a typo like ``workerMax`` is easy to fix."""
        if isinstance(data, dict):
            for key in data:
                if isinstance(key, str) and key not in cls.model_fields:
                    close = difflib.get_close_matches(key, list(cls.model_fields), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ValueError(f"{cls.__name__} has no field {key!r}{hint}")
        return data

    @field_validator("name")
    @classmethod
    def _name_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"{cls.__name__} name must not be empty; pass name='my-endpoint'")
        return value

    @field_validator("gpus")
    @classmethod
    def _expand_any_gpu(cls, value: list[GpuGroup | GpuType]) -> list[GpuGroup | GpuType]:
        """``ANY`` (pool or model) stands for every concrete pool, as in the original."""
        if GpuGroup.ANY in value or GpuType.ANY in value:
            return GpuGroup.all()
        return value

    @field_validator(*_MINIMUMS)
    @classmethod
    def _at_least_minimum(cls, value: int, info: ValidationInfo) -> int:
        minimum = _MINIMUMS[info.field_name]
        if value < minimum:
            raise ValueError(
                f"{info.field_name} must be >= {minimum} (got {value}); "
                f"set {info.field_name}={minimum} or more"
            )
        return value

    @model_validator(mode="after")
    def _check_and_derive(self) -> ServerlessResource:
        """Cross-field rules, then the derived fields (image, GPU selection)."""
        self._check_type()
        if self.workersMin > self.workersMax:
            raise ValueError(
                f"workersMin ({self.workersMin}) cannot be greater than "
                f"workersMax ({self.workersMax})"
            )
        if self.type is ServerlessType.LB and self.scalerType is ServerlessScalerType.QUEUE_DELAY:
            raise ValueError(
                "LoadBalancerSlsResource requires REQUEST_COUNT scaler, not QUEUE_DELAY. "
                "Load-balanced endpoints don't support queue-based scaling."
            )
        self._resolve_volume()
        if self._live_image_source is not None:
            self.__dict__["imageName"] = _live_image(*self._live_image_source)
        self._resolve_gpus()
        self._resolve_cuda()
        return self

    def _resolve_volume(self) -> None:
        """Check the volume's datacenter and keep ``networkVolumeId`` and the volume in step:
        an id alone names the local volume to attach (volumes are known by name here)."""
        if self.networkVolume is None and self.networkVolumeId:
            self.networkVolume = NetworkVolume(name=self.networkVolumeId, id=self.networkVolumeId)
        volume = self.networkVolume
        if volume is None:
            return
        if volume.dataCenterId is not self.datacenter:
            raise ValueError(
                f"Network volume datacenter ({volume.dataCenterId.value}) must match endpoint "
                f"datacenter ({self.datacenter.value})"
            )
        if volume.id is not None:
            self.networkVolumeId = volume.id

    def _check_type(self) -> None:
        expected = type(self).model_fields["type"].default
        if self.type is not expected:
            other_is_lb = expected is ServerlessType.QB
            other = "LoadBalancerSlsResource" if other_is_lb else "ServerlessEndpoint"
            raise ValueError(
                f"{type(self).__name__} is always type {expected.value}; "
                f"remove type={self.type.value!r} or use {other}"
            )

    def _resolve_gpus(self) -> None:
        """Settle ``gpus``/``gpuIds``/``gpuCount``; CPU instances rule out GPUs."""
        explicit = self.model_fields_set
        if "gpuIds" in explicit and "gpus" not in explicit:
            self.gpus = GpuGroup.from_gpu_ids_str(self.gpuIds)
        elif "gpuIds" in explicit and self.gpuIds != GpuGroup.to_gpu_ids_str(self.gpus):
            raise ValueError(
                f"gpuIds {self.gpuIds!r} does not match gpus; set only one of gpus or gpuIds"
            )
        gpus_asked = bool(self.gpus) and bool(explicit & {"gpus", "gpuIds"})
        count_asked = self.gpuCount > 0 and "gpuCount" in explicit
        name = type(self).__name__
        if self._cpu_only and not self.instanceIds:
            raise ValueError(
                f"{name} needs at least one CPU instance type; pass "
                "instanceIds=[CpuInstanceType.CPU3G_2_8] (or CpuInstanceType.ANY)"
            )
        if self.instanceIds:
            if gpus_asked or count_asked:
                raise ValueError(
                    f"{name} with instanceIds runs on CPU workers and takes no GPUs; "
                    "remove gpus/gpuCount or remove instanceIds"
                )
            self.gpus = []
            self.gpuCount = 0
        elif not self.gpus:
            raise ValueError(
                f"{name} needs at least one GPU in gpus (e.g. [GpuGroup.ANY]); "
                "for a CPU endpoint use a Cpu* class or pass instanceIds"
            )
        self.gpuIds = GpuGroup.to_gpu_ids_str(self.gpus)

    def _resolve_cuda(self) -> None:
        """Settle ``allowedCudaVersions`` (the CSV form of ``cudaVersions``); empty on CPU."""
        if self.is_cpu:
            self.allowedCudaVersions = ""
            return
        if self.allowedCudaVersions:
            listed = _parse_cuda_versions(self.allowedCudaVersions)
            if not self.cudaVersions:
                self.cudaVersions = listed
            elif set(listed) != set(self.cudaVersions):
                raise ValueError(
                    f"allowedCudaVersions {self.allowedCudaVersions!r} does not match "
                    "cudaVersions; set only one of cudaVersions or allowedCudaVersions"
                )
        self.allowedCudaVersions = ",".join(version.value for version in self.cudaVersions)

    def __setattr__(self, name: str, value: Any) -> None:
        """A live class's image is what makes it live: reassigning it changes nothing (as in
        the original), and says so."""
        if name == "imageName" and self.is_live and value != self.imageName:
            warnings.warn(
                f"{type(self).__name__} always runs {self.imageName}; the assignment "
                f"imageName={value!r} is ignored (use a non-live class for your own image)",
                stacklevel=2,
            )
            return
        super().__setattr__(name, value)

    @property
    def is_live(self) -> bool:
        """Live resources are provisioned on first call and run shipped functions."""
        return self._live_image_source is not None

    @property
    def is_load_balanced(self) -> bool:
        return self.type is ServerlessType.LB

    @property
    def is_cpu(self) -> bool:
        """CPU workers: Cpu* classes, or any resource given instanceIds."""
        return bool(self.instanceIds)

    @property
    def gpu_count(self) -> int:
        """GPUs each worker gets (0 on CPU resources)."""
        return 0 if self.is_cpu else self.gpuCount

    @property
    def execution_timeout_s(self) -> float | None:
        """Per-call timeout in seconds, or None when no limit is configured."""
        return self.executionTimeoutMs / 1000 if self.executionTimeoutMs > 0 else None

    @property
    def resource_key(self) -> str:
        """Stable identity of the declared resource (state key)."""
        return f"{type(self).__name__}:{self.name}"

    @property
    def config_hash(self) -> str:
        """Fingerprint of the configuration, for drift detection; runtime ids are left out."""
        dump = self.model_dump(mode="json", exclude=_HASH_EXCLUDED)
        text = json.dumps(dump, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    async def deploy(self) -> ServerlessResource:
        """Deploy this resource from the running script's project; fills `id` and
        `endpoint_url`."""
        from runpod_flash.deploy import deploy_resource

        url = await asyncio.to_thread(deploy_resource, self)
        self.endpoint_url = url
        self.id = url.rstrip("/").rsplit("/", 1)[-1]
        return self

    def is_deployed(self) -> bool:
        """Whether the running platform serves this resource now: its deployed endpoint, or
        for a live class the endpoint its calls provisioned in this process."""
        return locate(self) is not None

    def _serving(self) -> tuple[Platform, str, str]:
        """(platform, endpoint id, URL) of the serving endpoint, recorded on the resource;
        ValueError naming what to do when there is none."""
        found = locate(self)
        if found is None:
            how = ("call one of its @remote functions first (that provisions it)" if self.is_live
                   else "run `flash deploy` or `await resource.deploy()` first")
            raise ValueError(f"{type(self).__name__} '{self.name}' is not deployed; {how}")
        platform, summary = found
        self.id = endpoint_id = summary["id"]
        self.endpoint_url = url = platform.url + summary["path"]
        return platform, endpoint_id, url

    @property
    def url(self) -> str:
        """Where the endpoint answers on the platform (the original's is a console page)."""
        return self.endpoint_url or self._serving()[2]

    @property
    def endpoint(self) -> EndpointHandle:
        """A handle on the endpoint's queue API (run, runsync, status, cancel, health)."""
        if self.is_load_balanced:
            raise TypeError(
                f"{type(self).__name__} '{self.name}' is load-balanced: it has no job queue; "
                "send HTTP requests to its routes under resource.url"
            )
        platform, endpoint_id, _ = self._serving()
        return EndpointHandle(endpoint_id, platform, self.name)

    async def run(self, payload: dict[str, Any]) -> JobOutput:
        """Queue a job (`/run`) and wait for it to end; `payload` is the job's input, or a
        full request body with ``input``."""
        handle = await asyncio.to_thread(lambda: self.endpoint)
        job = await asyncio.to_thread(handle.run, payload)
        return JobOutput(**await asyncio.to_thread(job.wait))

    async def runsync(self, payload: dict[str, Any]) -> JobOutput:
        """Run a job (`/runsync`) within the execution timeout (60 s when none is set)."""
        handle = await asyncio.to_thread(lambda: self.endpoint)
        timeout = self.execution_timeout_s or DEFAULT_RUNSYNC_TIMEOUT_S
        return JobOutput(**await asyncio.to_thread(handle.runsync, payload, timeout))

    async def undeploy(self) -> dict[str, Any]:
        """Remove the serving endpoint: ``{success, name, endpoint_id, message}``."""
        result = await asyncio.to_thread(remove_endpoint, self)
        if result["success"]:
            self.id = None
            self.endpoint_url = None
        return result

    def platform_spec(self) -> dict[str, Any]:
        """The JSON body the platform receives to create this endpoint (`networkVolume`
        only when one is named, so specs without one keep their identity)."""
        spec: dict[str, Any] = {
            "name": self.name,
            "kind": "live" if self.is_live else "deployed",
            "type": self.type.value,
            "cpu": self.is_cpu,
            "gpuCount": self.gpu_count,
            "gpuIds": self.gpuIds,
            "workersMin": self.workersMin,
            "workersMax": self.workersMax,
            "idleTimeout": self.idleTimeout,
            "scalerType": self.scalerType.value,
            "scalerValue": self.scalerValue,
            "executionTimeoutMs": self.executionTimeoutMs,
            "env": dict(self.env),
        }
        if self.instanceIds:  # CPU worker sizes: a cluster provider reserves them
            spec["instanceIds"] = [getattr(i, "value", str(i)) for i in self.instanceIds]
        if self.networkVolume is not None:
            spec["networkVolume"] = {
                "name": self.networkVolume.name, "size": self.networkVolume.size,
            }
        return spec


def _parse_cuda_versions(text: str) -> list[CudaVersion]:
    try:
        return [CudaVersion(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        known = ", ".join(version.value for version in CudaVersion)
        raise ValueError(
            f"allowedCudaVersions {text!r} names an unknown CUDA version; use some of: {known}"
        ) from None


class _CpuDefaults(BaseModel):
    """Field defaults shared by the Cpu* classes (no GPUs, one small CPU instance)."""

    model_config = _CONFIG
    _cpu_only: ClassVar[bool] = True

    gpus: list[GpuGroup | GpuType] = Field(default_factory=list)
    gpuCount: int = 0
    instanceIds: list[CpuInstanceType] | None = Field(
        default_factory=lambda: [CpuInstanceType.CPU3G_2_8]
    )


class ServerlessEndpoint(ServerlessResource):
    """Deployed queue-based endpoint: calls become jobs with JSON kwargs."""


class CpuServerlessEndpoint(_CpuDefaults, ServerlessEndpoint):
    """Deployed queue-based endpoint on CPU workers."""


class LiveServerless(ServerlessEndpoint):
    """Queue-based endpoint provisioned on first call; runs the shipped function."""

    _live_image_source: ClassVar[tuple[str, str] | None] = ("FLASH_GPU_IMAGE", "runpod/flash")


class CpuLiveServerless(CpuServerlessEndpoint):
    """Live queue-based endpoint on CPU workers."""

    _live_image_source: ClassVar[tuple[str, str] | None] = ("FLASH_CPU_IMAGE", "runpod/flash-cpu")


class LoadBalancerSlsResource(ServerlessResource):
    """Deployed load-balanced endpoint: each decorated function is an HTTP route."""

    scalerType: ServerlessScalerType = ServerlessScalerType.REQUEST_COUNT
    type: ServerlessType = ServerlessType.LB


class CpuLoadBalancerSlsResource(_CpuDefaults, LoadBalancerSlsResource):
    """Deployed load-balanced endpoint on CPU workers."""


class LiveLoadBalancer(LoadBalancerSlsResource):
    """Load-balanced endpoint provisioned on first call; ``/execute`` runs shipped functions."""

    _live_image_source: ClassVar[tuple[str, str] | None] = ("FLASH_LB_IMAGE", "runpod/flash-lb")


class CpuLiveLoadBalancer(CpuLoadBalancerSlsResource):
    """Live load-balanced endpoint on CPU workers."""

    _live_image_source: ClassVar[tuple[str, str] | None] = (
        "FLASH_CPU_LB_IMAGE",
        "runpod/flash-lb-cpu",
    )
