"""`runpod_flash.core.resources.live_serverless`: the live classes (re-exported)."""

from runpod_flash.resources.serverless import (
    CpuLiveLoadBalancer,
    CpuLiveServerless,
    LiveLoadBalancer,
    LiveServerless,
)

__all__ = ["CpuLiveLoadBalancer", "CpuLiveServerless", "LiveLoadBalancer", "LiveServerless"]
