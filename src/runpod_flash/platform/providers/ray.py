"""Workers on a Ray cluster (`pip install 'openflash[ray]'` on every node): the platform
stays where it runs; Ray places the workers across the cluster's nodes.

Placement is Ray's: `gpuCount` asks for `num_gpus`, GPU pools for an accelerator resource
(`accelerator_type:A100`, or a node's own `flash_gpu:<POOL>` resource), CPU sizes for CPUs
and memory. A CPU worker's CPUs and memory are reserved by a placement group of its own, and
it is forked on the node Ray chose by that node's `NodeHost` (`providers.ray_hosts`), from a
pre-imported zygote as on one machine; a GPU worker gets an actor of its own (`WorkerHost`)
holding its GPUs. Both are named after the endpoint and the worker
(`flash:<endpoint>:<worker>`), so `ray status` and Ray's dashboard show whose they are. The
worker binds to its node's address and talks to the platform over HTTP with its own token,
exactly as a local worker does.

The deployed artifact and the dependency environment reach the node this way: a path that
exists on the node (one machine, or a shared filesystem) is used as is; otherwise the
artifact is shipped once per node through Ray's object store and unpacked into the node's
cache, and the dependency environment is built on the node by the same builder the platform
uses (cached there by its dependency set). `FLASH_RAY_SHIP=always` ships even when the path
exists (nodes with the same paths but different content).

Worker output is written on the node and copied into the platform's log file while the
worker runs, so `flash logs` and the dashboard read it as they read a local worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import socket
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runpod_flash.platform.providers.base import PlacementError, Resources, WorkerLaunch
from runpod_flash.platform.providers.ray_hosts import (
    LOG_CHUNK_BYTES,
    NodeHost,
    WorkerHost,
    ray_module,
)

logger = logging.getLogger("runpod_flash.platform")

LOG_PULL_S = 0.5
ACTOR_CALL_TIMEOUT_S = 30.0
NODES_CACHE_S = 2.0
REACH_TIMEOUT_S = 3.0
MAX_SHIPPED = 8  # artifact versions kept in Ray's object store for nodes that lack them
# A worker Ray cannot place (the cluster is full) gives up after this long.
PLACEMENT_TIMEOUT_S = float(os.environ.get("FLASH_RAY_PLACEMENT_TIMEOUT", "120"))
_PLATFORM_SECRETS = frozenset({"FLASH_API_KEY", "FLASH_PLATFORM_TOKEN"})


class RayWorker:
    """The platform's handle on one worker on a node (the `WorkerProcess` interface)."""

    start: int | None = None

    def __init__(self, host_actor: Any, worker_id: str, placed: dict[str, Any],
                 log_path: Path, release: Callable[[], None],
                 lost: Callable[[], None]) -> None:
        self._actor = host_actor
        self._worker_id = worker_id
        self.pid: int | None = placed["pid"]
        self.host: str = placed["host"]
        self.node: str | None = placed["node"]
        self.gpus: list[str] = placed["gpus"]
        self._log_path = log_path
        self._log_offset = 0
        self._release = release  # its reservation (placement group or actor) goes with it
        self._lost = lost  # its host is gone: the next worker on that node needs a new one
        self.exited: asyncio.Future[int] = asyncio.ensure_future(self._watch())

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def _watch(self) -> int:
        """The exit code; -1 when its host or node died (the process went with it)."""
        waiting = asyncio.ensure_future(self._actor.wait.remote(self._worker_id))
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=LOG_PULL_S)
            await self._pull_log()
        await self._pull_log()
        try:
            return int(waiting.result())
        except Exception as exc:  # RayActorError, node death: the worker is gone
            logger.warning("Ray worker on node %s is gone: %s", self.node, type(exc).__name__)
            self._lost()
            return -1
        finally:
            with contextlib.suppress(Exception):
                self._release()

    async def _pull_log(self) -> None:
        """Copy what the worker wrote on its node into the platform's log file."""
        try:
            while True:
                chunk = await self._actor.read_log.remote(self._worker_id, self._log_offset)
                if not chunk:
                    return
                self._log_offset += len(chunk)
                self._log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "ab") as handle:
                    handle.write(chunk)
                if len(chunk) < LOG_CHUNK_BYTES:
                    return
        except Exception as exc:  # the host is gone (its exit says so) or the disk is full
            logger.debug("could not copy the log of a Ray worker: %s", exc)

    async def stop(self, grace_s: float) -> None:
        if not self.exited.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._actor.stop.remote(self._worker_id, grace_s),
                                       grace_s + ACTOR_CALL_TIMEOUT_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), ACTOR_CALL_TIMEOUT_S)
        with contextlib.suppress(Exception):
            self._release()


class RayProvider:
    name = "ray"

    def __init__(self, ray: Any, logs_dir: Path) -> None:
        self._ray = ray
        self._logs_dir = logs_dir
        self._worker_host = ray.remote(WorkerHost)
        self._node_host = ray.remote(NodeHost)
        self._node_hosts: dict[str, Any] = {}  # node id -> its NodeHost (created on use)
        self._shipped: dict[str, Any] = {}  # artifact sha256 -> its archive in Ray's store
        self._nodes_read: tuple[float, list[dict[str, Any]]] = (-NODES_CACHE_S, [])

    @classmethod
    def connect(cls, address: str, logs_dir: Path) -> RayProvider:
        """Join the cluster at `address` (`auto`, `HOST:PORT` or `ray://...`)."""
        ray = ray_module()
        _check_reachable(address)
        try:
            ray.init(address=address, namespace="openflash", log_to_driver=False,
                     configure_logging=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            from runpod_flash.platform.providers import ProviderUnavailable

            raise ProviderUnavailable(
                f"cannot join the Ray cluster at {address!r} ({exc}); start one with "
                "`ray start --head`, or pass --ray-address HOST:PORT"
            ) from None
        return cls(ray, logs_dir)

    # -- what the cluster has ---------------------------------------------------------------

    def _nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes (asked of Ray at most every NODES_CACHE_S: status pages
        and placement checks read them often)."""
        now = time.monotonic()
        if now - self._nodes_read[0] > NODES_CACHE_S:
            self._nodes_read = (now, [n for n in self._ray.nodes() if n.get("Alive")])
        return self._nodes_read[1]

    def gpus(self) -> list[str]:
        return [f"{node['NodeID'][:8]}:{index}" for node in self._nodes()
                for index in range(int(node["Resources"].get("GPU", 0)))]

    def describe(self) -> dict[str, Any]:
        nodes = self._nodes()
        return {"provider": self.name, "nodes": len(nodes), "gpus": self.gpus(),
                "cluster": [{"node": n["NodeID"], "address": n["NodeManagerAddress"],
                             "resources": n["Resources"]} for n in nodes]}

    def check(self, resources: Resources, endpoint_name: str) -> None:
        self._options(resources, endpoint_name)

    def _options(self, resources: Resources, endpoint_name: str) -> dict[str, Any]:
        """Ray actor options for a worker of this size; PlacementError if no node fits."""
        nodes = self._nodes()
        most_gpus = max((int(n["Resources"].get("GPU", 0)) for n in nodes), default=0)
        if resources.gpus > most_gpus:
            raise PlacementError(
                f"Endpoint '{endpoint_name}' asks for {resources.gpus} GPUs per worker but no "
                f"node of the Ray cluster has more than {most_gpus}; lower gpuCount or add a "
                "node with more GPUs"
            )
        options: dict[str, Any] = {"num_cpus": resources.cpus, "num_gpus": resources.gpus}
        if resources.memory_mb:
            options["memory"] = resources.memory_mb * 1024 * 1024
        if resources.gpu_types and resources.gpus:
            have = {name for n in nodes for name in n["Resources"]}
            wanted = [name for pool in resources.gpu_types for name in _accelerator_names(pool)]
            found = next((name for name in wanted if name in have), None)
            if found is None:
                raise PlacementError(
                    f"Endpoint '{endpoint_name}' asks for GPUs of {', '.join(resources.gpu_types)} "
                    "but no node of the Ray cluster has them; start a node with "
                    f"`ray start --resources '{{\"flash_gpu:{resources.gpu_types[0]}\": 1}}'` "
                    "(or one whose GPUs Ray detects as such), or allow GpuGroup.ANY"
                )
            options["resources"] = {found: 0.001}
        return options

    # -- workers ----------------------------------------------------------------------------

    async def start(self, launch: WorkerLaunch) -> RayWorker:
        options = self._options(launch.resources, launch.endpoint_id)
        name = f"flash:{launch.endpoint_id}:{launch.worker_id}"
        spec = {
            "worker_id": launch.worker_id, "endpoint_id": launch.endpoint_id,
            "python": launch.python, "cwd": launch.cwd, "args": list(launch.args),
            "env": {**_platform_settings(), **launch.env},
            "dependencies": list(launch.dependencies), "artifact": launch.artifact,
        }
        if launch.resources.gpus:
            actor = self._worker_host.options(name=name, max_concurrency=4, max_restarts=0,
                                              **options).remote()
            release = functools.partial(self._ray.kill, actor, no_restart=True)
            lost: Callable[[], None] = _nothing
        else:
            node_id, release = await self._reserve(name, options)
            actor = self._host_on(node_id)
            lost = functools.partial(self._node_hosts.pop, node_id, None)
        try:
            needs = await _placed_within(actor.needs.remote(spec), options)
            if needs["app"] and launch.artifact:
                await actor.install_app.remote(launch.artifact, self._archive(launch))
            placed = await actor.start.remote(spec)
        except Exception as exc:
            release()
            if isinstance(exc, OSError):
                raise
            raise OSError(f"the Ray host of worker {launch.worker_id} failed: {exc}") from None
        return RayWorker(actor, launch.worker_id, placed, launch.log_path, release, lost)

    async def _reserve(self, name: str, options: dict[str, Any]
                       ) -> tuple[str, Callable[[], None]]:
        """A CPU worker's CPUs and memory, reserved by a placement group of its own: the node
        Ray chose, and how to release the reservation."""
        from ray.util.placement_group import (
            placement_group,
            placement_group_table,
            remove_placement_group,
        )

        bundle = {"CPU": float(options["num_cpus"])}
        if options.get("memory"):
            bundle["memory"] = float(options["memory"])
        group = placement_group([bundle], strategy="STRICT_PACK", name=name)
        try:
            await _placed_within(group.ready(), options)
            node_id = placement_group_table(group)["bundles_to_node_id"][0]
        except BaseException:
            remove_placement_group(group)
            raise
        return node_id, functools.partial(remove_placement_group, group)

    def _host_on(self, node_id: str) -> Any:
        """The node's NodeHost (no CPUs of its own), started on first use, kept warm."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        host = self._node_hosts.get(node_id)
        if host is None:
            host = self._node_hosts[node_id] = self._node_host.options(
                name=f"flash-node:{node_id[:12]}", num_cpus=0, max_concurrency=1000,
                max_restarts=0, get_if_exists=True,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote()
            host.warm.remote()
        return host

    def _archive(self, launch: WorkerLaunch) -> Any:
        """The artifact as a tar.gz in Ray's object store, made once per version."""
        ref = self._shipped.get(launch.artifact or "")
        if ref is None:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for path in sorted(Path(launch.cwd).rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(launch.cwd)), recursive=False)
            ref = self._shipped[launch.artifact or ""] = self._ray.put(buffer.getvalue())
            while len(self._shipped) > MAX_SHIPPED:  # the oldest versions leave Ray's store
                del self._shipped[next(iter(self._shipped))]
        return ref

    def reclaim(self, pid: int, start: int | None) -> None:
        """Actors are owned by the platform's Ray driver: they die with it."""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ray.shutdown()


def _check_reachable(address: str) -> None:
    """A HOST:PORT that does not answer fails in seconds, naming it (Ray itself would retry
    for a minute, and the platform would seem to hang while starting)."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        from runpod_flash.platform.providers import ProviderUnavailable

        raise ProviderUnavailable(
            f"cannot reach the Ray cluster at {address!r} ({exc}); check --ray-address "
            "(the head's GCS address, `ray start --head` prints it) and that its port is open"
        ) from None


def _nothing() -> None:
    """A GPU worker's actor is its own: nothing else to forget when it dies."""


async def _placed_within(ref: Any, options: dict[str, Any]) -> Any:
    """Await what Ray answers once a reservation is placed; a full cluster gives up."""
    try:
        return await asyncio.wait_for(ref, PLACEMENT_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise OSError(f"no node of the Ray cluster had room for it within "
                      f"{PLACEMENT_TIMEOUT_S:.0f}s ({options}); add nodes or lower "
                      "workersMax") from None


def _platform_settings() -> dict[str, str]:
    """The platform's FLASH_* settings (limits, timeouts) reach remote workers as they reach
    local ones; its credentials never do."""
    return {k: v for k, v in os.environ.items()
            if k.startswith("FLASH_") and k not in _PLATFORM_SECRETS}


def _accelerator_names(pool: str) -> list[str]:
    """Ray resource names that mean a GPU of this pool: ours, then Ray's detected types."""
    from runpod_flash.resources.enums import GpuGroup

    names = [f"flash_gpu:{pool}"]
    with contextlib.suppress(ValueError):
        for gpu_type in GpuGroup(pool).types():
            model = _ray_accelerator(gpu_type.value)
            if model and f"accelerator_type:{model}" not in names:
                names.append(f"accelerator_type:{model}")
    return names


def _ray_accelerator(gpu_name: str) -> str | None:
    """Ray's accelerator type for a GPU model name ("NVIDIA A100 80GB PCIe" -> "A100")."""
    for model in ("H200", "H100", "A100", "L40S", "L40", "L4", "A40", "A10G", "A10", "T4",
                  "V100", "A6000", "A5000", "A4000", "4090", "3090"):
        if model in gpu_name.replace("-", " ").upper().split() or \
                f" {model} " in f" {gpu_name.upper()} ":
            return model
    return None
