"""Scaling, health and fault tolerance under real load and real failures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import flash, pid_alive, platform_in, platform_status, stop_platform, wait_for
from runpod_flash.http.aio import ConnectionPool
from runpod_flash.http.blocking import request

SERVICE = '''
import asyncio, os, sys, time
from runpod_flash import CpuLoadBalancerSlsResource, CpuServerlessEndpoint, remote

if os.environ.get("FLASH_WORKER_ID") and os.path.exists(os.environ.get("CRASH_FLAG", "/-")):
    sys.exit("refusing to start: crash flag set")

burst = CpuLoadBalancerSlsResource(name="burst", workersMin=0, workersMax=3, idleTimeout=2,
                                   env={"CRASH_FLAG": "CRASH_FLAG_PATH"})
steady = CpuLoadBalancerSlsResource(name="steady", workersMin=2, workersMax=2)
queue = CpuServerlessEndpoint(name="steady-jobs", workersMin=2, workersMax=2)

@remote(burst, method="GET", path="/work")
async def work():
    await asyncio.sleep(0.2)
    return {"pid": os.getpid()}

@remote(burst, method="POST", path="/freeze")
async def freeze():
    time.sleep(30)  # blocks the worker's event loop: /ping stops answering
    return {}

@remote(steady, method="GET", path="/read")
async def read():
    await asyncio.sleep(0.05)
    return {"pid": os.getpid()}

@remote(steady, method="POST", path="/write")
async def write(n: int):
    await asyncio.sleep(0.05)
    return {"n": n, "pid": os.getpid()}

@remote(steady, method="GET", path="/slow")
async def slow():
    await asyncio.sleep(2)
    return {"done": True}

@remote(queue)
def job(n: int) -> int:
    time.sleep(0.05)
    return n
'''




def endpoint(name: str, home: Path | None = None) -> dict[str, Any]:
    return next(e for e in platform_status(home)["endpoints"] if e["name"] == name)


def ready_workers(name: str, home: Path | None = None) -> list[dict[str, Any]]:
    return [w for w in endpoint(name, home)["workers"] if w["state"] == "ready"]


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    project = tmp_path_factory.mktemp("scaling")
    flag = project / "crash.flag"
    (project / "service.py").write_text(SERVICE.replace("CRASH_FLAG_PATH", str(flag)))
    result = flash("deploy", str(project), "--json")
    assert result.returncode == 0, result.stderr
    found = {r["name"]: r["url"] for r in json.loads(result.stdout)}
    found["crash_flag"] = str(flag)
    yield found
    flash("undeploy", "--all", "--yes")


async def _burst(url: str, count: int) -> list[int]:
    port = int(url.split(":")[2].split("/")[0])
    path = "/" + url.split("/", 3)[3] + "/work"

    async def one() -> int:
        pool = ConnectionPool()
        status, _, _ = await pool.fetch("127.0.0.1", port, "GET", path, [], b"")
        pool.close()
        return status

    return list(await asyncio.gather(*(one() for _ in range(count))))


def test_burst_scales_zero_to_three_and_back_to_zero(urls: dict[str, str]) -> None:
    wait_for(lambda: not endpoint("burst")["workers"], timeout=20)  # deploy's worker idled out
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(ready_workers("burst")))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        statuses = asyncio.run(_burst(urls["burst"], 200))
        wait_for(lambda: peak == 3, timeout=10)
    finally:
        done.set()
        watcher.join(timeout=10)
    assert statuses == [200] * 200
    assert peak == 3
    wait_for(lambda: not endpoint("burst")["workers"], timeout=30)  # idleTimeout=2 → zero


def test_unresponsive_worker_is_replaced(urls: dict[str, str]) -> None:
    status, _ = request("GET", urls["burst"] + "/work", None, {}, 30)
    assert status == 200
    frozen = ready_workers("burst")[0]
    threading.Thread(target=request, args=("POST", urls["burst"] + "/freeze", b"{}", {}, 40),
                     daemon=True).start()
    wait_for(lambda: frozen["id"] not in {w["id"] for w in ready_workers("burst")}, timeout=20)
    wait_for(lambda: not pid_alive(frozen["pid"]), timeout=20)
    status, _ = request("GET", urls["burst"] + "/work", None, {}, 30)
    assert status == 200


def test_crash_loop_backs_off_and_shows_why(urls: dict[str, str]) -> None:
    Path(urls["crash_flag"]).write_text("crash")
    try:
        wait_for(lambda: not endpoint("burst")["workers"], timeout=30)
        status, body = request("GET", urls["burst"] + "/work", None, {}, 30)
        assert status == 503 and b"crash flag set" in body
        state = endpoint("burst")
        assert state["start_failures"] >= 1 and "crash flag set" in state["last_start_failure"]
        table = flash("status", env={"COLUMNS": "300"})
        assert "workers failing" in table.stdout and "crash flag set" in table.stdout
    finally:
        Path(urls["crash_flag"]).unlink()
    wait_for(lambda: request("GET", urls["burst"] + "/work", None, {}, 30)[0] == 200,
             timeout=40, interval=0.5)


def test_worker_killed_under_steady_load(urls: dict[str, str]) -> None:
    """30 s of reads, writes and jobs; one worker of each endpoint is killed mid-way."""
    platform = platform_in(None)
    assert platform is not None
    stop = threading.Event()
    failures: list[tuple[str, int, bytes]] = []
    counts = {"GET": 0, "POST": 0}
    job_ids: list[str] = []

    def load(method: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            path, body = ("/read", None) if method == "GET" else ("/write", b'{"n": 1}')
            status, data = request(method, urls["steady"] + path, body, {}, 30)
            counts[method] += 1
            if status != 200:
                failures.append((method, status, data))

    def submit() -> None:
        while not stop.is_set():
            job_ids.append(platform.call("POST", "/v2/steady-jobs/run",
                                         {"input": {"function": "job", "n": len(job_ids)}})["id"])
            time.sleep(0.02)

    threads = [threading.Thread(target=load, args=(m,)) for m in ("GET", "GET", "POST")]
    threads.append(threading.Thread(target=submit))
    for thread in threads:
        thread.start()
    try:
        time.sleep(10)
        lb_victim = ready_workers("steady")[0]["pid"]
        queue_victim = ready_workers("steady-jobs")[0]["pid"]
        os.kill(lb_victim, signal.SIGKILL)
        os.kill(queue_victim, signal.SIGKILL)
        time.sleep(20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert counts["GET"] > 100 and counts["POST"] > 50
    assert all(method == "POST" and status == 502 for method, status, _ in failures), failures
    assert len(failures) <= 2  # only writes in flight on the killed worker
    wait_for(lambda: all(platform.call("GET", f"/v2/steady-jobs/status/{i}")["status"]
                         == "COMPLETED" for i in job_ids), timeout=60, interval=0.5)
    assert len(job_ids) > 300


def test_drain_on_undeploy_completes_in_flight_requests(urls: dict[str, str], tmp_path: Path
                                                        ) -> None:
    result: dict[str, Any] = {}

    def slow_call() -> None:
        result["answer"] = request("GET", urls["steady"] + "/slow", None, {}, 30)

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)
    undeployed = flash("undeploy", "steady")
    caller.join(timeout=30)
    assert undeployed.returncode == 0, undeployed.stderr
    assert result["answer"] == (200, b'{"done":true}')
    assert request("GET", urls["steady"] + "/read", None, {}, 10)[0] == 404


def test_metrics_and_status_figures(urls: dict[str, str]) -> None:
    platform = platform_in(None)
    assert platform is not None
    request("GET", urls["burst"] + "/work", None, {}, 30)
    status, body = request("GET", platform.url + "/metrics", None, {}, 10)
    text = body.decode()
    assert status == 200
    assert ('flash_requests_total{endpoint="burst",name="burst",route="GET /work",'
            'status="200"}') in text
    assert "flash_request_duration_seconds_bucket" in text
    assert 'flash_workers{endpoint="burst",name="burst",state="ready"}' in text
    assert 'flash_queue_depth{endpoint="steady-jobs",name="steady-jobs"}' in text
    assert 'flash_cold_starts{endpoint="burst",name="burst"}' in text
    assert endpoint("burst")["stats"]["requests"] > 200


RESTART = '''
from runpod_flash import CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="comeback", workersMin=1, workersMax=1)

@remote(api, method="GET", path="/hi")
def hi():
    return "hi"
'''


def test_platform_restart_restores_deployed_endpoints(tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "comeback"
    home.mkdir()
    project.mkdir()
    (project / "comeback.py").write_text(RESTART)
    env = {"FLASH_HOME": str(home)}
    try:
        assert flash("deploy", str(project), env=env).returncode == 0
        assert flash("platform", "stop", env=env).returncode == 0
        assert flash("platform", "start", env=env).returncode == 0
        wait_for(lambda: ready_workers("comeback", home), timeout=30)
        platform = platform_in(home)
        assert platform is not None
        assert request("GET", platform.url + "/ep/comeback/hi", None, {}, 10) == (200, b'"hi"')
    finally:
        stop_platform(home)



SLOW_START = '''
import os, time
from runpod_flash import CpuLoadBalancerSlsResource, remote

if os.environ.get("FLASH_WORKER_ID"):
    time.sleep(4)  # a cold start slower than the platform lets requests wait

api = CpuLoadBalancerSlsResource(name="sluggish", workersMax=1, idleTimeout=1)

@remote(api, method="GET", path="/hi")
def hi():
    return "hi"
'''


def test_waiting_is_bounded_503_then_backlog_429(tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "sluggish"
    home.mkdir()
    project.mkdir()
    (project / "sluggish.py").write_text(SLOW_START)
    env = {"FLASH_HOME": str(home), "FLASH_COLD_START_WAIT": "1", "FLASH_MAX_BACKLOG": "1"}
    try:
        assert flash("deploy", str(project), env=env).returncode == 0
        wait_for(lambda: not endpoint("sluggish", home)["workers"], timeout=20)
        platform = platform_in(home)
        assert platform is not None
        url = platform.url + "/ep/sluggish/hi"
        answers: list[tuple[int, bytes]] = []
        callers = [threading.Thread(target=lambda: answers.append(
            request("GET", url, None, {}, 30))) for _ in range(3)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=30)
        statuses = sorted(status for status, _ in answers)
        assert statuses[0] == 429 and statuses[-1] == 503, answers
        assert any(b"no workers available" in body for status, body in answers if status == 503)
        wait_for(lambda: request("GET", url, None, {}, 30)[0] == 200, timeout=30, interval=0.5)
    finally:
        stop_platform(home)
