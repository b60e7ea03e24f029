"""What runs on a Ray node for the Ray provider (`providers.ray`): actors that start worker
processes there.

- `NodeHost`, one per node (no CPUs of its own): CPU workers fork from a pre-imported zygote,
  exactly as the local provider does, so a cold start costs a fork, not an interpreter and
  an actor. Their CPUs and memory are reserved by a placement group per worker.
- `WorkerHost`, one per GPU worker: Ray pins GPUs to an actor, so each GPU worker gets its
  own, holding its GPUs, and runs its process with them.

Both find the deployed artifact and the dependency environment on the node, or receive the
artifact (`install_app`) and build the environment here; worker output goes to a file on the
node that the platform copies (`read_log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from runpod_flash.config import ENV_WORKER_HOST

ENV_SHIP = "FLASH_RAY_SHIP"
LOG_CHUNK_BYTES = 1 << 20


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        from runpod_flash.platform.providers import ProviderUnavailable

        raise ProviderUnavailable(
            "the Ray provider needs Ray: pip install 'openflash[ray]' (on every node)"
        ) from None
    return ray


class NodeSide:
    """This node's cache (shipped apps, built environments, worker logs) and address."""

    def __init__(self) -> None:
        ray = ray_module()
        self.node_id: str = ray.get_runtime_context().get_node_id()
        self.host: str = ray.util.get_node_ip_address()
        self.cache = Path(tempfile.gettempdir()) / f"openflash-ray-{os.getuid()}"
        (self.cache / "logs").mkdir(mode=0o700, parents=True, exist_ok=True)

    def needs(self, launch: dict[str, Any]) -> dict[str, bool]:
        """What must reach this node before the worker can start."""
        sha = launch.get("artifact")
        if not sha or (self._app(sha) / "flash_manifest.json").exists():
            return {"app": False}
        return {"app": os.environ.get(ENV_SHIP) == "always" or launch.get("ship") == "always"
                or not os.path.isdir(launch["cwd"])}

    def install_app(self, sha256: str, archive: bytes) -> None:
        """Unpack a shipped artifact into this node's cache (checked like an upload)."""
        from runpod_flash.build.artifact import extract_artifact
        from runpod_flash.config import max_unpacked_bytes

        target = self._app(sha256)
        if (target / "flash_manifest.json").exists():
            return
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tar.gz") as tmp:
            tmp.write(archive)
            tmp.flush()
            extract_artifact(Path(tmp.name), target, max_unpacked_bytes())

    def _app(self, sha256: str) -> Path:
        return self.cache / "apps" / sha256

    def placed(self, launch: dict[str, Any]) -> dict[str, Any]:
        """The launch as it runs here: this node's copy of the app if it has one, bound to
        this node's address, logging into this node's cache."""
        launch = {**launch, "env": {**launch["env"], ENV_WORKER_HOST: self.host}}
        sha = launch.get("artifact")
        if sha and (self._app(sha) / "flash_manifest.json").exists():
            launch["cwd"] = launch["env"]["FLASH_APP_DIR"] = str(self._app(sha))
        launch["log"] = str(self.log_path(launch["worker_id"]))
        return launch

    def log_path(self, worker_id: str) -> Path:
        return self.cache / "logs" / f"{worker_id}.log"

    def read_log(self, worker_id: str, offset: int) -> bytes:
        try:
            with open(self.log_path(worker_id), "rb") as handle:
                handle.seek(offset)
                return handle.read(LOG_CHUNK_BYTES)
        except OSError:
            return b""


class NodeHost(NodeSide):
    """One per node (an async actor): forks CPU workers from a warm zygote."""

    def __init__(self) -> None:
        super().__init__()
        from runpod_flash.platform.gpus import GpuAllocator
        from runpod_flash.platform.providers.local import LocalProvider

        self._local = LocalProvider(self.cache / "logs", GpuAllocator([]))
        self._workers: dict[str, Any] = {}

    async def warm(self) -> None:
        """Import the worker runtime once, ahead of the first worker."""
        await self._local.warm(sys.executable)

    async def start(self, launch: dict[str, Any]) -> dict[str, Any]:
        from runpod_flash.platform.providers.base import WorkerLaunch

        launch = self.placed(launch)
        process = await self._local.start(WorkerLaunch(
            launch["worker_id"], launch["endpoint_id"], await interpreter(launch, self.cache),
            launch["env"], Path(launch["log"]), launch["cwd"], tuple(launch["args"]),
        ))
        self._workers[launch["worker_id"]] = process
        return {"pid": process.pid, "host": self.host, "node": self.node_id, "gpus": []}

    async def wait(self, worker_id: str) -> int:
        process = self._workers[worker_id]
        try:
            return await process.exited
        finally:
            self._workers.pop(worker_id, None)

    async def stop(self, worker_id: str, grace_s: float) -> None:
        process = self._workers.get(worker_id)
        if process is not None:
            await process.stop(grace_s)


class WorkerHost(NodeSide):
    """One GPU worker (a threaded actor holding the GPUs Ray gave it): runs its process."""

    def __init__(self) -> None:
        super().__init__()
        self._gpus = [str(g) for g in ray_module().get_gpu_ids()]
        self._process: subprocess.Popen[bytes] | None = None
        self._started = threading.Event()

    def start(self, launch: dict[str, Any]) -> dict[str, Any]:
        launch = self.placed(launch)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(launch["env"])
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self._gpus)
        python = asyncio.run(interpreter(launch, self.cache))
        log = os.open(launch["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._process = subprocess.Popen(
                [python, "-u", *launch["args"]], env=env, cwd=launch["cwd"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(log)
        self._started.set()
        return {"pid": self._process.pid, "host": self.host, "node": self.node_id,
                "gpus": self._gpus}

    def wait(self, worker_id: str) -> int:
        """Block until the worker exits; its exit code."""
        self._started.wait()
        assert self._process is not None
        return self._process.wait()

    def stop(self, worker_id: str, grace_s: float) -> None:
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

    def __del__(self) -> None:  # the actor going away takes its worker with it
        with contextlib.suppress(Exception):
            self.stop("", 0)


async def interpreter(launch: dict[str, Any], cache: Path) -> str:
    """The endpoint's interpreter on this node: its path if the node has it, else built here
    (cached by its dependency set). A function, not a host method: Ray makes an actor with
    any `async def` method an async actor, and WorkerHost must stay a threaded one."""
    python = launch["python"]
    if os.path.exists(python):
        return python
    if not launch.get("dependencies"):
        return sys.executable
    from runpod_flash.platform.environments import ensure_environment

    with open(launch["log"], "a") as progress:
        return await ensure_environment(
            "python3", list(launch["dependencies"]), [], cache / "envs",
            lambda line: print(line, file=progress, flush=True),
        )


def _die_with_parent() -> None:
    """In the worker process, before it runs: SIGKILL it when its actor dies, even by
    SIGKILL (the platform killed -9 takes its actors with it, and so their workers)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
