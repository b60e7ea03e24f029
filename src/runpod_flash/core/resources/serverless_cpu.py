"""`runpod_flash.core.resources.serverless_cpu`: the CPU queue endpoint class (re-exported)."""

from runpod_flash.resources.serverless import CpuServerlessEndpoint

__all__ = ["CpuServerlessEndpoint"]
