"""Resource configurations (pydantic models) and the enums they are written in."""

from .base import BaseResource, DeployableResource
from .endpoint import EndpointHandle, JobHandle
from .enums import (
    GPU_POOLS,
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    ServerlessScalerType,
    ServerlessType,
)
from .jobs import JobOutput, JobsHealth, ServerlessHealth, Status, WorkersHealth
from .serverless import (
    DEFAULT_WORKERS_MAX,
    DEFAULT_WORKERS_MIN,
    CpuLiveLoadBalancer,
    CpuLiveServerless,
    CpuLoadBalancerSlsResource,
    CpuServerlessEndpoint,
    LiveLoadBalancer,
    LiveServerless,
    LoadBalancerSlsResource,
    ServerlessEndpoint,
    ServerlessResource,
)
from .template import KeyValuePair, NetworkVolume, PodTemplate

__all__ = [
    "DEFAULT_WORKERS_MAX",
    "DEFAULT_WORKERS_MIN",
    "GPU_POOLS",
    "BaseResource",
    "CpuInstanceType",
    "CpuLiveLoadBalancer",
    "CpuLiveServerless",
    "CpuLoadBalancerSlsResource",
    "CpuServerlessEndpoint",
    "CudaVersion",
    "DataCenter",
    "DeployableResource",
    "EndpointHandle",
    "GpuGroup",
    "GpuType",
    "JobHandle",
    "JobOutput",
    "JobsHealth",
    "KeyValuePair",
    "LiveLoadBalancer",
    "LiveServerless",
    "LoadBalancerSlsResource",
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
