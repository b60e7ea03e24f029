"""`runpod_flash.core.resources.serverless`: the serverless base classes, the job and health
models and the enums the original defines in this module (re-exported)."""

from runpod_flash.resources.enums import (
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    ServerlessScalerType,
    ServerlessType,
)
from runpod_flash.resources.jobs import (
    JobOutput,
    JobsHealth,
    ServerlessHealth,
    Status,
    WorkersHealth,
)
from runpod_flash.resources.serverless import (
    DEFAULT_RUNSYNC_TIMEOUT_S,
    ServerlessEndpoint,
    ServerlessResource,
)
from runpod_flash.resources.template import KeyValuePair, NetworkVolume, PodTemplate

__all__ = [
    "DEFAULT_RUNSYNC_TIMEOUT_S",
    "CpuInstanceType",
    "CudaVersion",
    "DataCenter",
    "GpuGroup",
    "GpuType",
    "JobOutput",
    "JobsHealth",
    "KeyValuePair",
    "NetworkVolume",
    "PodTemplate",
    "ServerlessEndpoint",
    "ServerlessHealth",
    "ServerlessResource",
    "ServerlessScalerType",
    "ServerlessType",
    "Status",
    "WorkersHealth",
]
