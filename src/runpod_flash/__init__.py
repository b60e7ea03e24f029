"""openflash: `@remote` functions served as serverless endpoints on your own machine.

Exports load lazily so `import runpod_flash` (and the `flash` CLI) start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_WORKERS_MAX",
    "DEFAULT_WORKERS_MIN",
    "CpuInstanceType",
    "CpuLiveLoadBalancer",
    "CpuLiveServerless",
    "CpuLoadBalancerSlsResource",
    "CpuServerlessEndpoint",
    "CudaVersion",
    "DataCenter",
    "GpuGroup",
    "GpuType",
    "LiveLoadBalancer",
    "LiveServerless",
    "LoadBalancerSlsResource",
    "NetworkVolume",
    "PodTemplate",
    "RemoteExecutionError",
    "ServerlessEndpoint",
    "ServerlessResource",
    "ServerlessScalerType",
    "ServerlessType",
    "__version__",
    "remote",
]

_SPECIAL_HOMES = {
    "remote": "runpod_flash.decorator",
    "RemoteExecutionError": "runpod_flash.serialization",
}

if TYPE_CHECKING:
    from runpod_flash.decorator import remote
    from runpod_flash.resources import (
        DEFAULT_WORKERS_MAX,
        DEFAULT_WORKERS_MIN,
        CpuInstanceType,
        CpuLiveLoadBalancer,
        CpuLiveServerless,
        CpuLoadBalancerSlsResource,
        CpuServerlessEndpoint,
        CudaVersion,
        DataCenter,
        GpuGroup,
        GpuType,
        LiveLoadBalancer,
        LiveServerless,
        LoadBalancerSlsResource,
        NetworkVolume,
        PodTemplate,
        ServerlessEndpoint,
        ServerlessResource,
        ServerlessScalerType,
        ServerlessType,
    )
    from runpod_flash.serialization import RemoteExecutionError


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'runpod_flash' has no attribute '{name}'")
    # A script's `.env` is loaded when it first uses the API (`from runpod_flash import
    # remote`), so its resource configs can read os.environ; see runpod_flash.envfile.
    from runpod_flash.envfile import autoload

    autoload()
    module = _SPECIAL_HOMES.get(name, "runpod_flash.resources")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
