"""The provider interface: where and how workers run.

The supervisor decides *how many* workers an endpoint has and *which* of them take traffic;
a provider decides *where* a worker runs and starts, watches and stops it. Two providers
implement this interface: `providers.local` (processes on this machine) and `providers.ray`
(Ray actors placed across a cluster's nodes). A provider is the only part that knows about
processes, nodes and accelerators.

What a provider promises:

- `check(resources, endpoint_name)` says at once whether a worker of that size can ever be
  placed (a worker asking for 4 GPUs where no node has 4 fails fast, naming the fix).
- `start(launch)` starts one worker and returns its `WorkerProcess` once the worker process
  runs (not when it serves: the worker reports that itself to the platform over HTTP).
- `WorkerProcess.exited` resolves with the exit code when the worker ends for any reason,
  the node dying included (-1 where no code is known); `stop(grace_s)` sends SIGTERM, then
  kills what is left (the worker and what it started) after `grace_s`.
- `WorkerProcess.host` is the address the gateway and health checks reach the worker at;
  the worker binds to it (`config.ENV_WORKER_HOST`).
- `reclaim(pid, start)` stops a worker an earlier platform run left behind (after kill -9).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

RUNTIME_ARGS = ("-m", "runpod_flash.runtime")


class PlacementError(ValueError):
    """No node can ever hold a worker of this size; the message names the fix."""


@dataclass(frozen=True)
class Resources:
    """What one worker of an endpoint needs, read from its resource config."""

    gpus: int = 0
    gpu_types: tuple[str, ...] = ()  # any of these (the original's GpuGroup/GpuType names)
    cpus: float = 1.0
    memory_mb: int = 0  # 0: no reservation

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Resources:
        if spec.get("cpu"):
            cpus, memory_gb = _instance_size(spec.get("instanceIds") or ())
            return cls(cpus=cpus, memory_mb=memory_gb * 1024)
        return cls(gpus=int(spec.get("gpuCount", 0) or 0),
                   gpu_types=_gpu_pools(str(spec.get("gpuIds") or "")))


def _instance_size(instance_ids: Any) -> tuple[float, int]:
    """The smallest listed CPU size (`cpu3g-4-16`: 4 vCPUs, 16 GB); one vCPU for `any`."""
    sizes = []
    for instance in instance_ids:
        parts = str(instance).split("-")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            sizes.append((float(parts[1]), int(parts[2])))
    return min(sizes) if sizes else (1.0, 0)


def _gpu_pools(gpu_ids: str) -> tuple[str, ...]:
    """The GPU pools a `gpuIds` string allows; () when it allows any GPU."""
    from runpod_flash.resources.enums import GpuGroup

    pools = tuple(t.strip() for t in gpu_ids.split(",") if t.strip() and not t.startswith("-"))
    every = {group.value for group in GpuGroup.all()}
    if not pools or "any" in pools or every <= set(pools):
        return ()
    return pools


@dataclass
class WorkerLaunch:
    """Everything a provider needs to start one worker."""

    worker_id: str
    endpoint_id: str
    python: str
    env: dict[str, str]
    log_path: Path
    cwd: str
    args: tuple[str, ...] = RUNTIME_ARGS  # what the interpreter runs
    resources: Resources = field(default_factory=Resources)
    dependencies: tuple[str, ...] = ()  # to build its environment where `python` is missing
    artifact: str | None = None  # the deployed artifact's sha256, unpacked at `cwd`


class WorkerProcess(Protocol):
    """A started worker, wherever it runs."""

    pid: int | None  # on its node
    start: int | None  # the process's start time, with `pid` naming it and no later one
    exited: asyncio.Future[int]
    host: str  # where the gateway reaches it
    node: str | None  # the provider's node id; None for this machine
    gpus: list[str]  # the accelerator ids it was given

    @property
    def returncode(self) -> int | None: ...

    async def stop(self, grace_s: float) -> None: ...


class Provider(Protocol):
    name: str

    def gpus(self) -> list[str]:
        """Accelerators workers may get, for status pages ("node:id" on clusters)."""
        ...

    def check(self, resources: Resources, endpoint_name: str) -> None:
        """Raise PlacementError if no worker of this size can ever be placed."""
        ...

    async def start(self, launch: WorkerLaunch) -> WorkerProcess: ...

    def reclaim(self, pid: int, start: int | None) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What the platform page shows about where workers run."""
        ...

    def close(self) -> None: ...
