"""`runpod_flash.core.resources.load_balancer_sls_resource`: the load-balanced classes
(re-exported)."""

from runpod_flash.resources.serverless import (
    CpuLoadBalancerSlsResource,
    LoadBalancerSlsResource,
)

__all__ = ["CpuLoadBalancerSlsResource", "LoadBalancerSlsResource"]
