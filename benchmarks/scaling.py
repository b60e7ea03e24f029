"""Scaling: cold start from zero workers, a burst's scale-out 0 -> 3 and back, beside Ray Serve.

Deploys one load-balanced endpoint (workersMin=0, workersMax=3, idleTimeout=2, scalerValue=4)
on a private platform, then prints:

- zero-to-first-response: with the endpoint at 0 workers, the time of one `GET /hello` until
  its 200 answer (repeated, waiting for 0 workers between), min and median;
- a burst of concurrent `GET /work` requests (each sleeps 0.2 s) from 0 workers: the time
  from the first request until the status shows 3 ready workers, how many requests answered
  200, the burst's total time, and the time from its last answer until 0 workers again;
- if `ray[serve]` is installed, Ray Serve's scale-from-zero time for the same trivial
  function on this machine (min_replicas=0).

    python benchmarks/scaling.py [--repeats 5] [--burst 200] [--ray-repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

PROJECT = textwrap.dedent("""
    from runpod_flash import CpuLoadBalancerSlsResource, remote

    api = CpuLoadBalancerSlsResource(
        name="bench-scale", workersMin=0, workersMax=3, idleTimeout=2, scalerValue=4
    )

    @remote(api, method="GET", path="/hello")
    async def hello():
        return {"hello": "world"}

    @remote(api, method="GET", path="/work")
    async def work():
        import asyncio

        await asyncio.sleep(0.2)
        return {"done": True}
""")
NAME = "bench-scale"
MAX_WORKERS = 3
SCALE_UP_TIMEOUT_S = 30.0
SCALE_DOWN_TIMEOUT_S = 60.0
ZERO_TIMEOUT_S = 60.0
TARGETS = {"cold_start_median_s": 0.5}


def workers_of(platform: Any) -> list[dict[str, Any]]:
    status = platform.call("GET", "/api/v1/status")
    endpoint = next(e for e in status["endpoints"] if e["name"] == NAME)
    return list(endpoint["workers"])


def wait_for_zero(platform: Any, timeout: float = ZERO_TIMEOUT_S) -> bool:
    """Wait until the endpoint has no workers at all; False if it still has some."""
    deadline = time.monotonic() + timeout
    while workers_of(platform):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def timed_get(url: str, timeout: float = 60.0) -> float:
    """Seconds from sending `GET url` to its whole 200 answer."""
    from runpod_flash.http.blocking import request

    started = time.perf_counter()
    status, data = request("GET", url, None, {}, timeout)
    elapsed = time.perf_counter() - started
    assert status == 200, (status, data[:300])
    return elapsed


def cold_starts(platform: Any, url: str, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        if not wait_for_zero(platform):
            print(f"  endpoint did not reach 0 workers within {ZERO_TIMEOUT_S:.0f} s; "
                  "cold start not measured")
            break
        samples.append(timed_get(url))
    return samples


class Watcher(threading.Thread):
    """Polls the endpoint's workers every 20 ms: (perf_counter, ready, total) samples."""

    def __init__(self, platform: Any) -> None:
        super().__init__(daemon=True)
        self.platform = platform
        self.samples: list[tuple[float, int, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            workers = workers_of(self.platform)
            ready = sum(1 for w in workers if w["state"] == "ready")
            self.samples.append((time.perf_counter(), ready, len(workers)))
            self.halt.wait(0.02)

    def first(self, after: float, ready: int | None = None, total: int | None = None
              ) -> float | None:
        """When a sample taken after `after` first showed `ready` ready / `total` workers."""
        for at, seen_ready, seen_total in list(self.samples):
            if at < after:
                continue
            if (ready is None or seen_ready >= ready) and (total is None or seen_total == total):
                return at
        return None


async def burst(port: int, path: str, count: int) -> tuple[float, float, list[int]]:
    """Fire `count` concurrent GETs: (first send, last answer, statuses; 0 = no answer)."""
    from runpod_flash.http.aio import ConnectionPool

    statuses: list[int] = []

    async def one() -> None:
        pool = ConnectionPool()
        try:
            status, _, _ = await asyncio.wait_for(
                pool.fetch("127.0.0.1", port, "GET", path, [], b""), 120
            )
        except (OSError, asyncio.TimeoutError):
            status = 0
        finally:
            pool.close()
        statuses.append(status)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return started, time.perf_counter(), statuses


def scale_out(platform: Any, path: str, count: int) -> dict[str, Any]:
    """From 0 workers, a burst of `count` requests; when 3 were ready, and when 0 again."""
    if not wait_for_zero(platform):
        return {"error": f"endpoint did not reach 0 workers within {ZERO_TIMEOUT_S:.0f} s"}
    watcher = Watcher(platform)
    watcher.start()
    try:
        port = int(platform.url.rsplit(":", 1)[1])
        started, ended, statuses = asyncio.run(burst(port, f"{path}/work", count))
        deadline = started + SCALE_UP_TIMEOUT_S
        while watcher.first(started, ready=MAX_WORKERS) is None and \
                time.perf_counter() < deadline:
            time.sleep(0.05)
        deadline = ended + SCALE_DOWN_TIMEOUT_S
        while watcher.first(ended, total=0) is None and time.perf_counter() < deadline:
            time.sleep(0.05)
    finally:
        watcher.halt.set()
        watcher.join(5)
    ready_at = watcher.first(started, ready=MAX_WORKERS)
    zero_at = watcher.first(ended, total=0)
    return {
        "scale_up_s": None if ready_at is None or ready_at - started > SCALE_UP_TIMEOUT_S
        else ready_at - started,
        "burst_s": ended - started,
        "ok": statuses.count(200),
        "statuses": sorted(set(statuses)),
        "peak_ready": max((s[1] for s in watcher.samples), default=0),
        "peak_total": max((s[2] for s in watcher.samples), default=0),
        "scale_down_s": None if zero_at is None else zero_at - ended,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_serve_cold_starts(repeats: int) -> list[float] | str:
    """Ray Serve's scale-from-zero GET times, or why there are none."""
    if importlib.util.find_spec("ray") is None:
        return "not installed (pip install 'ray[serve]' to compare)"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        from ray import serve
    except Exception as exc:  # a broken install must not fail the benchmark either
        return f"not importable ({exc}); pip install 'ray[serve]' to compare"

    port = free_port()
    base = f"http://127.0.0.1:{port}"

    @serve.deployment(
        autoscaling_config={"min_replicas": 0, "max_replicas": 1, "initial_replicas": 0,
                            "downscale_delay_s": 1},
    )
    class Hello:
        async def __call__(self, request: Any) -> dict[str, str]:
            return {"hello": "world"}

    def replicas() -> int:
        app = serve.status().applications.get("bench")
        if app is None:
            return 0
        return sum(sum(d.replica_states.values()) for d in app.deployments.values())

    def wait_for(check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray Serve: {what} not within {timeout:.0f} s")
            time.sleep(0.05)

    def routed() -> bool:
        from runpod_flash.http.blocking import request

        with contextlib.suppress(OSError):
            status, data = request("GET", f"{base}/-/routes", None, {}, 5)
            return status == 200 and b"/bench" in data
        return False

    samples: list[float] = []
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Hello.bind(), name="bench", route_prefix="/bench")
        wait_for(routed, 60, "the proxy routing /bench")
        for _ in range(repeats):
            wait_for(lambda: replicas() == 0, 60, "scale to zero")
            samples.append(timed_get(f"{base}/bench", 120))
    except Exception as exc:  # a comparison only: never fail the benchmark over Ray
        return f"failed: {type(exc).__name__}: {exc}"
    finally:
        # ray.shutdown() takes Serve down with it; serve.shutdown() first only adds a
        # "graceful_shutdown failed" line from the raylet.
        with contextlib.suppress(Exception):
            ray.shutdown()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--ray-repeats", type=int, default=3)
    options = parser.parse_args()

    os.environ.pop("FLASH_API_KEY", None)  # deployed endpoints then take requests without auth
    os.environ.update({"FLASH_HOME": tempfile.mkdtemp(prefix="flash-bench-"),
                       "FLASH_PLATFORM_PORT": "0"})
    from runpod_flash.deploy import deploy_project

    project = Path(tempfile.mkdtemp(prefix="flash-bench-scaling-"))
    (project / "service.py").write_text(PROJECT)
    platform, results = deploy_project(project)
    try:
        path = next(r["path"] for r in results if r["name"] == NAME)
        colds = cold_starts(platform, f"{platform.url}{path}/hello", options.repeats)
        scaling = scale_out(platform, path, options.burst)
    finally:
        subprocess.run([sys.executable, "-m", "runpod_flash.cli", "platform", "stop"],
                       env=dict(os.environ), capture_output=True, timeout=60)

    checks: list[tuple[str, bool]] = []
    if colds:
        median = statistics.median(colds)
        print(f"cold start from 0 workers, GET /hello ({len(colds)} runs): "
              f"min {min(colds):.3f} s  median {median:.3f} s")
    else:
        median = float("inf")
    checks.append((f"cold start from zero <= {TARGETS['cold_start_median_s']} s",
                   median <= TARGETS["cold_start_median_s"]))
    if "error" in scaling:
        print(f"burst: not measured: {scaling['error']}")
    else:
        count = options.burst
        if scaling["scale_up_s"] is None:
            print(f"scale 0 -> {MAX_WORKERS} ready workers under the burst: timed out after "
                  f"{SCALE_UP_TIMEOUT_S:.0f} s (peak {scaling['peak_ready']} ready, "
                  f"{scaling['peak_total']} workers)")
        else:
            print(f"scale 0 -> {MAX_WORKERS} ready workers under the burst: "
                  f"{scaling['scale_up_s']:.3f} s from the first request")
        print(f"burst of {count} concurrent GET /work (0.2 s each): {scaling['ok']}/{count} "
              f"answered 200 (statuses {scaling['statuses']}), total {scaling['burst_s']:.3f} s")
        if scaling["scale_down_s"] is None:
            print(f"back to 0 workers: not within {SCALE_DOWN_TIMEOUT_S:.0f} s of the last answer")
        else:
            print(f"back to 0 workers: {scaling['scale_down_s']:.3f} s after the last answer "
                  f"(idleTimeout 2 s)")
        checks.append((f"scaled 0 -> {MAX_WORKERS} ready workers within "
                       f"{SCALE_UP_TIMEOUT_S:.0f} s", scaling["scale_up_s"] is not None))
        checks.append((f"all {count} burst requests answered 200", scaling["ok"] == count))
    sys.stdout.flush()
    ray = ray_serve_cold_starts(options.ray_repeats)
    if isinstance(ray, str):
        print(f"Ray Serve: {ray}")
    elif ray:
        print(f"Ray Serve scale from zero, GET until 200 ({len(ray)} runs): "
              f"min {min(ray):.3f} s  median {statistics.median(ray):.3f} s")
        if colds:
            print(f"ratio openflash/Ray Serve cold start (median): "
                  f"{median / statistics.median(ray):.2f}x")
    for name, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


if __name__ == "__main__":
    main()
