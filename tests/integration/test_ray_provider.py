"""The Ray provider on a real multi-node Ray cluster on this machine: a head that holds no
workers (the platform's driver connects to it), a node with a (declared) GPU and a CPU node.
Workers are Ray actors; the platform, its gateway and queue run here as usual."""

from __future__ import annotations

import json
import os
import shutil
import signal
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ProjectHome, flash, pid_alive, run_python, stop_platform, wait_for

ray = pytest.importorskip("ray", reason="the Ray provider's tests need `pip install ray`")
from ray.cluster_utils import Cluster  # noqa: E402

SERVICE = textwrap.dedent("""
    import os
    from runpod_flash import (
        CpuLiveLoadBalancer, CpuLiveServerless, GpuGroup, LiveLoadBalancer, LiveServerless,
        remote)

    api = CpuLiveLoadBalancer(name="ray-api", workersMin=1)
    jobs = CpuLiveServerless(name="ray-jobs", workersMax=2, executionTimeoutMs=180000)
    gpu = LiveServerless(name="ray-gpu", gpuCount=1, workersMin=1)
    a100 = LiveServerless(name="ray-a100", gpus=[GpuGroup.AMPERE_80], workersMin=1)
    ada = LiveServerless(name="ray-ada", gpus=[GpuGroup.ADA_24])
    # on the GPU node for sure: the node-failure test kills it
    gpu_api = LiveLoadBalancer(name="ray-gpu-api", gpuCount=1)
    gpu_jobs = LiveServerless(name="ray-gpu-jobs", gpuCount=1, workersMax=2,
                              executionTimeoutMs=180000)

    @remote(api, method="POST", path="/where")
    async def where(x: int) -> dict:
        print(f"where called with {x}", flush=True)
        return {"x": x, "pid": os.getpid()}

    @remote(api, method="POST", path="/slow")
    async def slow(seconds: float) -> int:
        import asyncio
        await asyncio.sleep(seconds)
        return os.getpid()

    @remote(gpu_api, method="POST", path="/slow")
    async def gpu_slow(seconds: float) -> int:
        import asyncio
        await asyncio.sleep(seconds)
        return os.getpid()

    @remote(gpu_jobs)
    async def gpu_square(x: int, pause: float = 0.0) -> int:
        import asyncio
        await asyncio.sleep(pause)
        return x * x

    @remote(jobs)
    async def square(x: int, pause: float = 0.0) -> int:
        import asyncio
        await asyncio.sleep(pause)
        return x * x

    @remote(gpu)
    async def gpu_devices() -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")

    @remote(a100)
    async def on_a100() -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")

    @remote(ada)
    async def on_ada() -> str:
        return "never"
""")


GPU_NODE: dict[str, Any] = {"num_cpus": 8, "num_gpus": 8,
                            "resources": {"flash_gpu:AMPERE_80": 8}}


class RayHome(ProjectHome):
    """A local Ray cluster and a platform (own FLASH_HOME) using it; stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        self.gpu_node = self.cluster.add_node(**GPU_NODE)
        self.cpu_node = self.cluster.add_node(num_cpus=8)
        self.cluster.wait_for_nodes()
        super().__init__(root, SERVICE, FLASH_RAY_ADDRESS=self.cluster.address,
                         FLASH_PROVIDER="ray")

    def start_platform(self) -> None:
        result = flash("platform", "start", "--provider", "ray", "--ray-address",
                       self.cluster.address, env=self.env, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    def endpoint(self, name: str) -> dict[str, Any]:
        return next(e for e in self.status()["endpoints"] if e["name"] == name)

    def busy_workers(self, name: str) -> list[dict[str, Any]]:
        """The endpoint's workers with work in flight ([] before it exists)."""
        return [w for e in self.status()["endpoints"] if e["name"] == name
                for w in e["workers"] if w["in_flight"] > 0]

    def node_id(self, node: Any) -> str:
        return str(node.node_id)

    def stop(self) -> None:
        stop_platform(self.path)
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHome]:
    home = RayHome(tmp_path_factory.mktemp("ray"))
    try:
        home.start_platform()
        yield home
    finally:
        home.stop()


def test_lb_endpoint_through_remote_runs_on_a_worker_node(cluster: RayHome) -> None:
    out = cluster.run("print(json.dumps(asyncio.run(svc.where(7))))")
    assert out["x"] == 7
    workers = cluster.endpoint("ray-api")["workers"]
    assert workers and {w["node"] for w in workers} <= {
        cluster.node_id(cluster.gpu_node), cluster.node_id(cluster.cpu_node)}
    provider = cluster.status()["provider"]
    assert provider["provider"] == "ray" and provider["nodes"] == 3


def test_queue_endpoint_through_remote(cluster: RayHome) -> None:
    out = cluster.run("""
        async def main():
            return await asyncio.gather(*(svc.square(i) for i in range(6)))
        print(json.dumps(asyncio.run(main())))
    """)
    assert out == [i * i for i in range(6)]


def test_gpu_endpoints_land_on_the_gpu_node(cluster: RayHome) -> None:
    out = cluster.run("""
        print(json.dumps([asyncio.run(svc.gpu_devices()), asyncio.run(svc.on_a100())]))
    """)
    assert len(set(out)) == 2 and all(d in "0123" for d in out)  # a GPU each, from Ray
    for name in ("ray-gpu", "ray-a100"):
        nodes = {w["node"] for w in cluster.endpoint(name)["workers"]}
        assert nodes == {cluster.node_id(cluster.gpu_node)}, name


def test_gpu_pool_no_node_has_fails_fast_naming_the_fix(cluster: RayHome) -> None:
    script = textwrap.dedent("""
        import asyncio, svc
        try:
            asyncio.run(svc.on_ada())
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    started = time.monotonic()
    result = run_python(script, env=cluster.env, cwd=cluster.project, timeout=120)
    assert "ADA_24" in result.stdout and "flash_gpu:ADA_24" in result.stdout, result.stdout
    assert time.monotonic() - started < 60


def test_workers_show_in_ray_by_endpoint_and_worker(cluster: RayHome) -> None:
    """A CPU worker's reservation (a placement group) and a GPU worker's actor are named
    `flash:<endpoint>:<worker>`; each node's host is `flash-node:<node>`."""
    cpu, gpu = cluster.endpoint("ray-api"), cluster.endpoint("ray-gpu")
    names = run_python(textwrap.dedent(f"""
        import json, ray
        from ray.util import placement_group_table
        ray.init(address={cluster.cluster.address!r}, log_to_driver=False)
        actors = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        groups = [g["name"] for g in placement_group_table().values() if g["state"] == "CREATED"]
        print(json.dumps([actors, groups]))
    """), timeout=120)
    assert names.returncode == 0, names.stderr[-2000:]
    actors, groups = json.loads(names.stdout.splitlines()[-1])
    assert f"flash:{cpu['id']}:{cpu['workers'][0]['id']}" in groups
    assert f"flash:{gpu['id']}:{gpu['workers'][0]['id']}" in actors
    assert f"flash-node:{cpu['workers'][0]['node'][:12]}" in actors


def test_worker_logs_reach_the_platform(cluster: RayHome) -> None:
    cluster.run("print(json.dumps(asyncio.run(svc.where(4242))))")
    log = Path(cluster.endpoint("ray-api")["workers"][0]["log"])
    wait_for(lambda: log.exists() and "where called with 4242" in log.read_text(), timeout=20)


def test_deployed_user_service_with_artifact_shipped_to_the_node(
    cluster: RayHome, tmp_path: Path
) -> None:
    project = tmp_path / "user_service"
    shutil.copytree(Path(__file__).parent / "projects" / "user_service", project)
    result = flash("deploy", str(project), "--json", env=cluster.env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    url = {e["name"]: e["url"] for e in json.loads(result.stdout)}["user-service"]
    with urllib.request.urlopen(url + "/users/1", timeout=30) as response:
        assert json.load(response)["name"] == "Alice"
    worker = cluster.endpoint("user-service")["workers"][0]
    assert worker["node"] in {cluster.node_id(cluster.gpu_node), cluster.node_id(cluster.cpu_node)}


def _in_thread(cluster: RayHome, code: str) -> tuple[threading.Thread, list[Any]]:
    """Run `code` (with `svc` imported) in a fresh interpreter on a thread; its last line of
    output, parsed as JSON, lands in the list."""
    out: list[Any] = []

    def run() -> None:
        started = time.monotonic()
        out.append((cluster.run(code), time.monotonic() - started))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_node_killed_under_load_loses_no_job_and_fails_lb_fast(cluster: RayHome) -> None:
    """The GPU node dies with a queue endpoint's jobs and a load-balanced request in flight
    on it; a new GPU node joins; every job completes once, the request fails fast."""
    victim = cluster.gpu_node
    jobs, jobs_out = _in_thread(cluster, """
        async def main():
            return await asyncio.gather(*(svc.gpu_square(i, 0.3) for i in range(16)))
        print(json.dumps(asyncio.run(main())))
    """)
    lb, lb_out = _in_thread(cluster, """
        try:
            print(json.dumps(["returned", asyncio.run(svc.gpu_slow(60))]))
        except Exception as exc:
            print(json.dumps(["raised", type(exc).__name__, str(exc)]))
    """)
    wait_for(lambda: cluster.busy_workers("ray-gpu-jobs") and cluster.busy_workers("ray-gpu-api"),
             timeout=120)
    assert {w["node"] for name in ("ray-gpu-jobs", "ray-gpu-api")
            for w in cluster.endpoint(name)["workers"]} == {cluster.node_id(victim)}
    killed_at = time.monotonic()
    cluster.cluster.remove_node(victim, allow_graceful=False)
    lb.join(timeout=120)
    (answer, _), = lb_out
    assert answer[0] == "raised", answer
    assert time.monotonic() - killed_at < 30, answer  # failed fast, never waited out the 60 s
    cluster.gpu_node = cluster.cluster.add_node(**GPU_NODE)  # where replacements can go
    jobs.join(timeout=300)
    assert jobs_out and jobs_out[0][0] == [i * i for i in range(16)]  # every job, once
    nodes = {w["node"] for w in cluster.endpoint("ray-gpu-jobs")["workers"]} - {None}
    assert nodes == {cluster.node_id(cluster.gpu_node)}  # (None: one still being placed)


def test_platform_killed_takes_its_ray_workers_with_it(cluster: RayHome) -> None:
    """The platform is the owner of its Ray reservations and hosts: killed with SIGKILL, its
    workers on every node go too (nothing keeps serving, or holding GPUs, unowned)."""
    cluster.run("print(json.dumps(asyncio.run(svc.where(1))))")  # a CPU worker, forked
    status = cluster.status()
    pids = [w["pid"] for e in status["endpoints"] for w in e["workers"] if w["pid"]]
    assert pids and {"ray-api", "ray-gpu-jobs"} <= {e["name"] for e in status["endpoints"]}
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=60)
