"""`runpod_flash.core.resources.gpu`: GPU pools and models (re-exported); `GPU_POOLS` maps
each pool to its models (the original's `POOLS_TO_TYPES`)."""

from runpod_flash.resources.enums import GPU_POOLS, GpuGroup, GpuType

__all__ = ["GPU_POOLS", "GpuGroup", "GpuType"]
