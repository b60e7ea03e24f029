"""`runpod_flash.core.resources.cpu`: CPU instance types (re-exported).

The original's container-disk limits per instance type are not here: workers are local
processes without a container disk (see README, "Compatibility with the original API").
"""

from runpod_flash.resources.enums import CpuInstanceType

__all__ = ["CpuInstanceType"]
