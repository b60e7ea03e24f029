"""Queue endpoints: runsync latency and jobs/s, beside the `runpod` package's own local server.

Deploys, on a private platform: a queue endpoint with a trivial @remote function (2 workers)
and the same trivial function as a plain Runpod handler script. Prints runsync p50/p99 for
both, jobs/s from submit to completion with 2 workers, and runsync p50 of
`python handler.py --rp_serve_api` (the runpod package's local test server) on the same
handler. `--retained N` first runs N jobs whose results the platform keeps (its 30-minute
retention), then measures: the queue's cost must not grow with what it keeps.

    python benchmarks/queue_jobs.py [--calls 500] [--jobs 3000] [--retained 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SERVICE = textwrap.dedent("""
    from runpod_flash import CpuServerlessEndpoint, remote

    bench = CpuServerlessEndpoint(name="bench-queue", workersMin=2, workersMax=2)

    @remote(bench)
    def add(a: int, b: int) -> int:
        return a + b
""")
HANDLER = textwrap.dedent("""
    import runpod

    def handler(job):
        return job["input"]["a"] + job["input"]["b"]

    runpod.serverless.start({"handler": handler})
""")
SETTINGS = textwrap.dedent("""
    [endpoints.bench-queue]
    concurrency = 8

    [handlers.bench-handler]
    file = "handler.py"
    workersMin = 1
""")
TARGETS = {"runsync_p50_ms": 5.0, "jobs_per_s": 500.0}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


def runsync_samples(url: str, body: bytes, headers: dict[str, str], count: int) -> list[float]:
    from runpod_flash.http.blocking import request

    samples = []
    for _ in range(count + count // 10):
        started = time.perf_counter()
        status, data = request("POST", url, body, headers, 30)
        samples.append((time.perf_counter() - started) * 1000)
        assert status == 200 and b"COMPLETED" in data, data
    return samples[count // 10:]


async def throughput(port: int, path: str, token: str, jobs: int) -> float:
    """Jobs/s from the first submit to the last completion, 32 submitters."""
    from runpod_flash.http.aio import ConnectionPool

    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"content-type", b"application/json")]
    body = json.dumps({"input": {"function": "add", "a": 1, "b": 2}}).encode()
    pending = list(range(jobs))
    ids: list[str] = []

    async def completed() -> int:
        _, _, data = await pool.fetch("127.0.0.1", port, "GET", f"{path}/health", headers, b"")
        return int(json.loads(data)["jobs"]["completed"])

    async def submitter() -> None:
        pool = ConnectionPool()
        while pending:
            pending.pop()
            while True:
                status, _, data = await pool.fetch("127.0.0.1", port, "POST", f"{path}/run",
                                                     headers, body)
                if status != 429:  # the queue is full (FLASH_MAX_QUEUED_JOBS): wait a little
                    break
                await asyncio.sleep(0.05)
            assert status == 200, data
            ids.append(json.loads(data)["id"])
        pool.close()

    pool = ConnectionPool()
    before = await completed()
    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(32)))
    while await completed() < before + jobs:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    pool.close()
    return jobs / elapsed


def runpod_local_server_samples(project: Path, count: int) -> list[float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    server = subprocess.Popen(
        [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_port", str(port),
         "--rp_log_level", "ERROR"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        from runpod_flash.http.blocking import request

        deadline = time.monotonic() + 30
        while True:
            try:
                request("GET", f"http://127.0.0.1:{port}/docs", None, {}, 2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        body = json.dumps({"input": {"a": 1, "b": 2}}).encode()
        return runsync_samples(f"http://127.0.0.1:{port}/runsync", body, {}, count)
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--retained", type=int, default=0,
                        help="finished jobs the platform keeps before measuring")
    options = parser.parse_args()

    os.environ.update({"FLASH_HOME": tempfile.mkdtemp(prefix="flash-bench-"),
                       "FLASH_PLATFORM_PORT": "0"})
    project = Path(tempfile.mkdtemp(prefix="flash-bench-queue-"))
    (project / "service.py").write_text(SERVICE)
    (project / "handler.py").write_text(HANDLER)
    (project / "flash.toml").write_text(SETTINGS)
    from runpod_flash.deploy import deploy_project

    platform, _ = deploy_project(project)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            workers = platform.call("GET", "/v2/bench-queue/health")["workers"]
            if workers["ready"] >= 2:
                break
            time.sleep(0.1)
        port = int(platform.url.rsplit(":", 1)[1])
        if options.retained:
            fill = asyncio.run(throughput(port, "/v2/bench-queue", platform.token,
                                          options.retained))
            print(f"retained {options.retained} finished jobs first ({fill:.0f} jobs/s)")
        ours = runsync_samples(
            f"{platform.url}/v2/bench-queue/runsync",
            json.dumps({"input": {"function": "add", "a": 1, "b": 2}}).encode(),
            platform.auth, options.calls,
        )
        handler_here = runsync_samples(  # ~1 s each (see below): a few are enough
            f"{platform.url}/v2/bench-handler/runsync",
            json.dumps({"input": {"a": 1, "b": 2}}).encode(), platform.auth, 10,
        )
        rate = asyncio.run(throughput(port, "/v2/bench-queue", platform.token, options.jobs))
    finally:
        subprocess.run([sys.executable, "-m", "runpod_flash.cli", "platform", "stop"],
                       env=dict(os.environ), capture_output=True, timeout=60)
    reference = runpod_local_server_samples(project, options.calls)

    # The runpod SDK worker sleeps 1 s after each job before it asks for the next (its
    # JobScaler, "Queue is full. Retrying soon."): back-to-back runsync calls to a handler
    # script take ~1 s each on any platform; the @remote row is the platform's own cost.
    rows = [("openflash runsync, @remote function", ours),
            ("openflash runsync, runpod SDK worker script", handler_here),
            ("runpod --rp_serve_api runsync, same handler", reference)]
    for name, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"{name:46s} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms")
    ours_p50 = percentiles(ours)[0]
    print(f"ratio openflash/@remote vs runpod local server (p50): "
          f"{ours_p50 / percentiles(reference)[0]:.2f}x")
    print(f"jobs/s submit to completion, 2 workers: {rate:.0f}")
    for name, ok in (
        (f"runsync p50 <= {TARGETS['runsync_p50_ms']} ms", ours_p50 <= TARGETS["runsync_p50_ms"]),
        (f">= {TARGETS['jobs_per_s']:.0f} jobs/s", rate >= TARGETS["jobs_per_s"]),
    ):
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


if __name__ == "__main__":
    main()
