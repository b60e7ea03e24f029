"""Workers on a Ray cluster: each worker is a Ray actor that runs the worker process on the
node Ray placed it on (`pip install 'openflash[ray]'` on every node).

Placement is Ray's: `gpuCount` asks for `num_gpus`, GPU pools for an accelerator resource
(`accelerator_type:A100`, or a node's own `flash_gpu:<POOL>` resource), CPU sizes for
`num_cpus` and memory. The actor (named `flash:<endpoint>:<worker>`, so `ray status` and
Ray's dashboard show whose it is) starts the process with the worker's environment; the
process binds to its node's address and talks to the platform over HTTP with its own token,
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
import io
import logging
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from runpod_flash.config import ENV_WORKER_HOST
from runpod_flash.platform.providers.base import PlacementError, Resources, WorkerLaunch

logger = logging.getLogger("runpod_flash.platform")

ENV_SHIP = "FLASH_RAY_SHIP"
LOG_PULL_S = 0.5
LOG_CHUNK_BYTES = 1 << 20
ACTOR_CALL_TIMEOUT_S = 30.0
NODES_CACHE_S = 2.0
MAX_SHIPPED = 8  # artifact versions kept in Ray's object store for nodes that lack them
# A worker Ray cannot place (the cluster is full) gives up after this long.
PLACEMENT_TIMEOUT_S = float(os.environ.get("FLASH_RAY_PLACEMENT_TIMEOUT", "120"))
_PLATFORM_SECRETS = frozenset({"FLASH_API_KEY", "FLASH_PLATFORM_TOKEN"})


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        from runpod_flash.platform.providers import ProviderUnavailable

        raise ProviderUnavailable(
            "the Ray provider needs Ray: pip install 'openflash[ray]' (on every node)"
        ) from None
    return ray


class WorkerHost:
    """Lives on a Ray node as an actor: one worker process, its log, and its stop."""

    def __init__(self, launch: dict[str, Any]) -> None:
        ray = _ray()
        self._launch = launch
        self._node_id = ray.get_runtime_context().get_node_id()
        self._host = ray.util.get_node_ip_address()
        self._gpus = [str(g) for g in ray.get_gpu_ids()]
        self._cache = Path(tempfile.gettempdir()) / f"openflash-ray-{os.getuid()}"
        self._cache.mkdir(mode=0o700, exist_ok=True)
        self._log = self._cache / "logs" / f"{launch['worker_id']}.log"
        self._log.parent.mkdir(mode=0o700, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None
        self._started = threading.Event()

    def needs(self) -> dict[str, bool]:
        """What must reach this node before the worker can start."""
        ship = os.environ.get(ENV_SHIP) == "always" or self._launch.get("ship") == "always"
        app = self._launch.get("artifact")
        return {"app": bool(app) and (ship or not os.path.isdir(self._launch["cwd"]))}

    def install_app(self, sha256: str, archive: bytes) -> None:
        """Unpack a shipped artifact into this node's cache (checked like an upload)."""
        from runpod_flash.build.artifact import extract_artifact
        from runpod_flash.config import max_unpacked_bytes

        target = self._cache / "apps" / sha256
        if not (target / "flash_manifest.json").exists():
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tar.gz") as tmp:
                tmp.write(archive)
                tmp.flush()
                extract_artifact(Path(tmp.name), target, max_unpacked_bytes())
        self._launch["cwd"] = str(target)
        self._launch["env"]["FLASH_APP_DIR"] = str(target)

    def start(self) -> dict[str, Any]:
        """Start the worker process; where it runs and what it got."""
        launch = self._launch
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RAY_") and k not in _PLATFORM_SECRETS}
        env.update(launch["env"])
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self._gpus)
        env[ENV_WORKER_HOST] = self._host
        log = os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._process = subprocess.Popen(
                [self._python(), "-u", *launch["args"]], env=env, cwd=launch["cwd"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(log)
        self._started.set()
        return {"pid": self._process.pid, "host": self._host, "node": self._node_id,
                "gpus": self._gpus}

    def _python(self) -> str:
        """The endpoint's interpreter: its path if this node has it, else built here."""
        python = self._launch["python"]
        if os.path.exists(python):
            return python
        if not self._launch.get("dependencies"):
            return sys.executable
        from runpod_flash.platform.environments import ensure_environment

        with open(self._log, "a") as progress:
            return asyncio.run(ensure_environment(
                "python3", list(self._launch["dependencies"]), [], self._cache / "envs",
                lambda line: print(line, file=progress, flush=True),
            ))

    def wait(self) -> int:
        """Block until the worker exits; its exit code."""
        self._started.wait()
        assert self._process is not None
        return self._process.wait()

    def stop(self, grace_s: float) -> None:
        """SIGTERM (in-flight work finishes), SIGKILL to its group after `grace_s`."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def read_log(self, offset: int) -> bytes:
        try:
            with open(self._log, "rb") as handle:
                handle.seek(offset)
                return handle.read(LOG_CHUNK_BYTES)
        except OSError:
            return b""

    def __del__(self) -> None:  # the actor going away takes its worker with it
        with contextlib.suppress(Exception):
            self.stop(0)


def _die_with_parent() -> None:
    """In the worker process, before it runs: SIGKILL it when its actor dies, even by
    SIGKILL (the platform killed -9 takes its actors with it, and so their workers)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RayWorker:
    """The platform's handle on one worker actor (the `WorkerProcess` interface)."""

    start: int | None = None

    def __init__(self, ray: Any, actor: Any, placed: dict[str, Any], log_path: Path) -> None:
        self._ray = ray
        self._actor = actor
        self.pid: int | None = placed["pid"]
        self.host: str = placed["host"]
        self.node: str | None = placed["node"]
        self.gpus: list[str] = placed["gpus"]
        self._log_path = log_path
        self._log_offset = 0
        self.exited: asyncio.Future[int] = asyncio.ensure_future(self._watch())

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def _watch(self) -> int:
        """The exit code; -1 when the actor or its node died (the process went with it)."""
        waiting = asyncio.ensure_future(self._actor.wait.remote())
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=LOG_PULL_S)
            await self._pull_log()
        await self._pull_log()
        try:
            return int(waiting.result())
        except Exception as exc:  # RayActorError, node death: the worker is gone
            logger.warning("Ray worker on node %s is gone: %s", self.node, type(exc).__name__)
            return -1

    async def _pull_log(self) -> None:
        """Copy what the worker wrote on its node into the platform's log file."""
        try:
            while True:
                chunk = await self._actor.read_log.remote(self._log_offset)
                if not chunk:
                    return
                self._log_offset += len(chunk)
                self._log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "ab") as handle:
                    handle.write(chunk)
                if len(chunk) < LOG_CHUNK_BYTES:
                    return
        except Exception as exc:  # the actor is gone (its exit says so) or the disk is full
            logger.debug("could not copy the log of a Ray worker: %s", exc)

    async def stop(self, grace_s: float) -> None:
        if not self.exited.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._actor.stop.remote(grace_s),
                                       grace_s + ACTOR_CALL_TIMEOUT_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), ACTOR_CALL_TIMEOUT_S)
        with contextlib.suppress(Exception):
            self._ray.kill(self._actor, no_restart=True)


class RayProvider:
    name = "ray"

    def __init__(self, ray: Any, logs_dir: Path) -> None:
        self._ray = ray
        self._logs_dir = logs_dir
        self._actor_class = ray.remote(WorkerHost)
        self._shipped: dict[str, Any] = {}  # artifact sha256 -> its archive in Ray's store
        self._nodes_read: tuple[float, list[dict[str, Any]]] = (-NODES_CACHE_S, [])

    @classmethod
    def connect(cls, address: str, logs_dir: Path) -> RayProvider:
        """Join the cluster at `address` (`auto`, `HOST:PORT` or `ray://...`)."""
        ray = _ray()
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
        actor = self._actor_class.options(
            name=f"flash:{launch.endpoint_id}:{launch.worker_id}", max_concurrency=4,
            max_restarts=0, **options,
        ).remote({
            "worker_id": launch.worker_id, "python": launch.python, "cwd": launch.cwd,
            "args": list(launch.args), "env": {**_platform_settings(), **launch.env},
            "dependencies": list(launch.dependencies), "artifact": launch.artifact,
        })
        try:
            try:
                needs = await asyncio.wait_for(actor.needs.remote(), PLACEMENT_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise OSError(f"no node of the Ray cluster had room for it within "
                              f"{PLACEMENT_TIMEOUT_S:.0f}s ({options}); add nodes or lower "
                              "workersMax") from None
            if needs["app"] and launch.artifact:
                await actor.install_app.remote(launch.artifact, self._archive(launch))
            placed = await actor.start.remote()
        except Exception as exc:
            self._ray.kill(actor, no_restart=True)
            raise OSError(f"the Ray actor of worker {launch.worker_id} failed: {exc}") from None
        return RayWorker(self._ray, actor, placed, launch.log_path)

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
