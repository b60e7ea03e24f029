"""Dashboard costs: page load server time on a large platform, and what an open dashboard
takes from the gateway.

1. Server time (in-process, through the dashboard's ASGI routes, no network) of the endpoint
   list with 50 endpoints (an hour of history each), the queue overview and a job list with
   10,000 jobs in the store, the endpoint page and the platform page. Target: under 300 ms.
2. Gateway throughput with `wrk` (c=32 and 1, the two-worker project of `lb_gateway.py`)
   without a browser, with a headless Chromium on about:blank, and with it signed in on the
   endpoint list and an endpoint page (their polling and log tail stream): that is
   `dashboard_overhead.py`, run from here with the same `--seconds` and `--rounds`.
   Target: the polling costs under 2% of the gateway's throughput.

    python benchmarks/dashboard.py [--seconds 6] [--rounds 5] [--skip-gateway]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import dashboard_overhead  # the gateway's throughput with a dashboard open

ENDPOINTS = 50
QUEUE_ENDPOINTS = 10
JOBS = 10_000
PAGE_TRIES = 30
TARGET_PAGE_MS = 300.0


async def _get(app: Any, path: str, cookie: str) -> tuple[int, float]:
    """One GET through the ASGI app: its status and server time in ms."""
    route, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": route, "raw_path": route.encode(),
             "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"127.0.0.1:7770"), (b"cookie", cookie.encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 7770)}
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    started = time.perf_counter()
    await app(scope, receive, send)
    return status, (time.perf_counter() - started) * 1000


async def page_times(home: Path) -> dict[str, list[float]]:
    """Builds the platform state in-process and times each page PAGE_TRIES times."""
    from starlette.applications import Starlette

    from runpod_flash.platform.dashboard import Dashboard
    from runpod_flash.platform.dashboard.auth import SESSION_COOKIE
    from runpod_flash.platform.endpoints import Endpoint, Worker
    from runpod_flash.platform.gpus import GpuAllocator
    from runpod_flash.platform.jobs import JobQueue
    from runpod_flash.platform.metrics import Metrics
    from runpod_flash.platform.store import Store
    from runpod_flash.platform.supervisor import Supervisor

    store = Store(home / "state.db")
    supervisor = Supervisor(store, "http://127.0.0.1:7770", "token", GpuAllocator([]))
    jobs = JobQueue(store, lambda endpoint_id, waiting: None)  # no workers are started
    metrics = Metrics(supervisor, lambda endpoint_id: jobs.load(endpoint_id).waiting)
    queue_ids = []
    for number in range(ENDPOINTS):
        queue = number < QUEUE_ENDPOINTS
        spec = {"type": "QB" if queue else "LB", "app": f"app{number % 5}",
                "environment": "production", "workersMin": 1, "workersMax": 3,
                "routes": {} if queue else {"GET /hello": {}, "POST /items/{item_id}": {}}}
        endpoint = Endpoint(f"ep-{number}", f"ep-{number}", "deployed", spec, status="ready")
        for index in range(2):
            worker_id = f"w-{number}-{index}"
            endpoint.workers[worker_id] = Worker(worker_id, endpoint.id, endpoint.version,
                                                 home / f"{worker_id}.log", [], state="ready",
                                                 port=40000 + index)
        supervisor.endpoints[endpoint.id] = endpoint
        if queue:
            queue_ids.append(endpoint.id)
    submitted = [jobs.submit(queue_ids[n % QUEUE_ENDPOINTS], {"input": {"n": n}})
                 for n in range(JOBS)]
    for job in submitted[: JOBS * 6 // 10]:
        jobs.cancel(job)
    dashboard = Dashboard(supervisor, jobs, metrics, "token", None, home / "state.db")
    for second in range(0, 3610, 10):  # an hour of history for every endpoint
        for endpoint in supervisor.endpoints.values():
            endpoint.stats["requests"] += 100
            metrics.observe_request(endpoint.name, "GET /hello", 200, 0.002)
        dashboard.sampler.sample(now=time.time() - 3600 + second)
    while store.finished_jobs() < JOBS * 6 // 10:  # the store's writer catches up
        await asyncio.sleep(0.05)
    session = dashboard.auth.sign_in("token")
    assert session is not None
    cookie = f"{SESSION_COOKIE}={session.id}"
    app = Starlette(routes=dashboard.routes())
    job_id = submitted[-1].id
    pages = {"endpoint list": "/dashboard", "endpoint list rows": "/dashboard?rows=1",
             "endpoint page": "/dashboard/endpoints/ep-20",
             "charts data": "/dashboard/endpoints/ep-20/history",
             "queue overview": "/dashboard/queue", "job list": f"/dashboard/queue/{queue_ids[0]}",
             "job page": f"/dashboard/queue/{queue_ids[-1]}/jobs/{job_id}",
             "platform": "/dashboard/platform"}
    times: dict[str, list[float]] = {name: [] for name in pages}
    for _ in range(PAGE_TRIES):
        for name, path in pages.items():
            status, ms = await _get(app, path, cookie)
            if status != 200:
                raise SystemExit(f"broken: {path} answered {status}")
            times[name].append(ms)
    jobs.stop()
    store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--skip-gateway", action="store_true",
                        help="only the page load times (no wrk needed)")
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="flash-bench-dashboard-pages-"))
    os.environ["FLASH_HOME"] = str(home)
    times = asyncio.run(page_times(home))
    print(f"server time per page, {ENDPOINTS} endpoints, {JOBS} jobs in the store "
          f"(median / max of {PAGE_TRIES}):")
    slowest = 0.0
    for name, values in times.items():
        slowest = max(slowest, statistics.median(values))
        print(f"  {name:20s} {statistics.median(values):7.2f} ms  {max(values):7.2f} ms")
    print(f"  [{'PASS' if slowest < TARGET_PAGE_MS else 'FAIL'}] every page's median under "
          f"{TARGET_PAGE_MS:g} ms")
    shutil.rmtree(home, ignore_errors=True)
    if options.skip_gateway:
        return
    if not shutil.which("wrk"):
        sys.exit("missing wrk: install with `apt-get install wrk` (or pass --skip-gateway)")
    print()
    try:
        dashboard_overhead.run(options.seconds, options.rounds, http_only=False)
    except dashboard_overhead.lb_gateway.BenchError as exc:
        sys.exit(f"broken: {exc}")


if __name__ == "__main__":
    main()
