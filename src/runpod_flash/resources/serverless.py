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
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .enums import (
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    ServerlessScalerType,
    ServerlessType,
)
from .template import NetworkVolume, PodTemplate

IMAGE_TAG_ENV = "FLASH_IMAGE_TAG"

_MINIMUMS: dict[str, int] = {
    "workersMin": 0,
    "workersMax": 1,
    "idleTimeout": 0,
    "executionTimeoutMs": 0,
    "scalerValue": 1,
    "gpuCount": 0,
}
_HASH_EXCLUDED = {"id", "endpoint_url"}
_CONFIG = ConfigDict(validate_by_name=True, validate_default=True, extra="forbid")


def _live_image(env_var: str, repository: str) -> str:
    """The image a live class runs: ``$<env_var>``, else ``<repository>:$FLASH_IMAGE_TAG``."""
    tag = os.environ.get(IMAGE_TAG_ENV) or "latest"
    return os.environ.get(env_var) or f"{repository}:{tag}"


class ServerlessResource(BaseModel):
    """Common fields and rules of every serverless endpoint configuration."""

    model_config = _CONFIG

    # (environment variable, repository) of the locked image; None for non-live classes.
    _live_image_source: ClassVar[tuple[str, str] | None] = None
    # Cpu* classes never take GPUs.
    _cpu_only: ClassVar[bool] = False

    name: str
    id: str | None = None
    imageName: str = ""
    gpus: list[GpuGroup | GpuType] = Field(default_factory=lambda: [GpuGroup.ANY])
    gpuIds: str = ""
    gpuCount: int = 1
    cudaVersions: list[CudaVersion] = Field(default_factory=list)
    instanceIds: list[CpuInstanceType] | None = None
    workersMin: int = 0
    workersMax: int = 1
    idleTimeout: int = 60
    executionTimeoutMs: int = 0
    scalerType: ServerlessScalerType = ServerlessScalerType.QUEUE_DELAY
    scalerValue: int = 4
    flashboot: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    networkVolume: NetworkVolume | None = None
    datacenter: DataCenter = DataCenter.EU_RO_1
    template: PodTemplate | None = None
    templateId: str | None = None
    type: ServerlessType = ServerlessType.QB
    endpoint_url: str | None = None

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
        volume = self.networkVolume
        if volume is not None and volume.dataCenterId is not self.datacenter:
            raise ValueError(
                f"Network volume datacenter ({volume.dataCenterId.value}) must match endpoint "
                f"datacenter ({self.datacenter.value})"
            )
        if self._live_image_source is not None:
            self.imageName = _live_image(*self._live_image_source)
        self._resolve_gpus()
        return self

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
        """Deploy this resource from the running script's project; fills `endpoint_url`."""
        from runpod_flash.deploy import deploy_resource

        self.endpoint_url = await asyncio.to_thread(deploy_resource, self)
        return self

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
        if self.networkVolume is not None:
            spec["networkVolume"] = {
                "name": self.networkVolume.name, "size": self.networkVolume.size,
            }
        return spec


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
