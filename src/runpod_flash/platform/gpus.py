"""Which GPUs this machine has, and which ones each worker gets."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter


class GpuRequestError(ValueError):
    """A resource asks for more GPUs per worker than the machine has."""


def detect_gpus() -> list[str]:
    """GPU ids the platform may hand out: `CUDA_VISIBLE_DEVICES` if set, else nvidia-smi's."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip()]


class GpuAllocator:
    """Hands each worker the GPUs its resource asks for, spreading workers over the GPUs."""

    def __init__(self, gpus: list[str]) -> None:
        self.gpus = gpus
        self._users: Counter[str] = Counter({gpu: 0 for gpu in gpus})

    def check(self, endpoint_name: str, count: int) -> None:
        """Raise GpuRequestError if a worker can never get `count` GPUs here."""
        if self.gpus and count > len(self.gpus):
            raise GpuRequestError(
                f"Endpoint '{endpoint_name}' asks for {count} GPUs per worker but this machine "
                f"has {len(self.gpus)} ({', '.join(self.gpus)}); lower gpuCount to at most "
                f"{len(self.gpus)}."
            )

    def allocate(self, endpoint_name: str, count: int) -> list[str]:
        """The GPU ids for a new worker; [] for CPU work or on a machine without GPUs."""
        self.check(endpoint_name, count)
        if count <= 0 or not self.gpus:
            return []
        least_used = sorted(self.gpus, key=lambda gpu: (self._users[gpu], self.gpus.index(gpu)))
        chosen = sorted(least_used[:count], key=self.gpus.index)
        self._users.update(chosen)
        return chosen

    def release(self, gpus: list[str]) -> None:
        self._users.subtract(gpus)
