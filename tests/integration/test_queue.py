"""Queue-based endpoints through the official `runpod` client, @remote and raw HTTP."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from helpers import (
    flash,
    platform_in,
    platform_status,
    run_python,
    stop_platform,
    wait_for,
    worker_pids,
)

runpod = pytest.importorskip("runpod")

PROJECT = Path(__file__).parent / "projects" / "queue_app"




@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("queue") / "queue_app"
    shutil.copytree(PROJECT, target)
    return target


@pytest.fixture(scope="module")
def deployed(project: Path) -> Iterator[dict[str, str]]:
    """The queue project deployed on the session platform; the runpod client points at it."""
    result = flash("deploy", str(project), "--json")
    assert result.returncode == 0, result.stderr
    platform = platform_in(None)
    assert platform is not None
    runpod.api_key = platform.token
    runpod.endpoint_url_base = f"{platform.url}/v2"
    yield {r["name"]: r["url"] for r in json.loads(result.stdout)}
    flash("undeploy", "--all", "--yes")


def job_status(job_id: str, endpoint: str = "jobs") -> dict[str, Any]:
    platform = platform_in(None)
    assert platform is not None
    return platform.call("GET", f"/v2/{endpoint}/status/{job_id}")


def test_run_status_and_output_with_the_official_client(deployed: dict[str, str]) -> None:
    endpoint = runpod.Endpoint("jobs")
    job = endpoint.run({"function": "add", "a": 2, "b": 3})
    assert job.output(timeout=60) == 5
    assert job.status() == "COMPLETED"
    details = job_status(job.job_id)
    assert details["delayTime"] >= 0 and details["executionTime"] >= 0


def test_run_sync_with_the_official_client(deployed: dict[str, str]) -> None:
    assert runpod.Endpoint("jobs").run_sync({"function": "add", "a": 20, "b": 22},
                                            timeout=60) == 42


def test_user_exception_fails_the_job_without_retry(deployed: dict[str, str]) -> None:
    job = runpod.Endpoint("jobs").run({"function": "fail", "message": "quota of 3"})
    wait_for(lambda: job.status() == "FAILED", timeout=60)
    details = job_status(job.job_id)
    error = json.loads(details["error"])
    assert error["error_type"] == "QuotaExceeded" and error["error_message"] == "quota of 3"
    platform = platform_in(None)
    assert platform is not None
    assert platform.call("GET", "/v2/jobs/health")["jobs"]["retried"] == 0


def test_cancel_queued_and_running_jobs(deployed: dict[str, str]) -> None:
    endpoint = runpod.Endpoint("jobs")
    running = endpoint.run({"function": "slow", "seconds": 3, "tag": "cancel-running"})
    wait_for(lambda: running.status() == "IN_PROGRESS", timeout=60)
    queued = endpoint.run({"function": "add", "a": 1, "b": 1})
    assert queued.status() == "IN_QUEUE"
    assert queued.cancel()["status"] == "CANCELLED"
    assert running.cancel()["status"] == "CANCELLED"
    time.sleep(3.5)  # the running one finishing late must not overwrite CANCELLED
    assert queued.status() == "CANCELLED" and running.status() == "CANCELLED"


def test_health_and_purge_queue(deployed: dict[str, str]) -> None:
    endpoint = runpod.Endpoint("jobs")
    blocker = endpoint.run({"function": "slow", "seconds": 2, "tag": "purge"})
    wait_for(lambda: blocker.status() == "IN_PROGRESS", timeout=60)
    for i in range(3):
        endpoint.run({"function": "add", "a": i, "b": i})
    health = endpoint.health()
    assert health["jobs"]["inQueue"] == 3 and health["workers"]["running"] >= 1
    assert endpoint.purge_queue() == {"removed": 3, "status": "completed"}
    assert blocker.output(timeout=60)["tag"] == "purge"


def test_execution_timeout_and_ttl(deployed: dict[str, str]) -> None:
    platform = platform_in(None)
    assert platform is not None
    slow = platform.call("POST", "/v2/jobs/run", {
        "input": {"function": "slow", "seconds": 3}, "policy": {"executionTimeout": 1000}})
    expiring = platform.call("POST", "/v2/jobs/run", {
        "input": {"function": "add", "a": 1, "b": 2}, "policy": {"ttl": 500}})
    wait_for(lambda: job_status(slow["id"])["status"] == "TIMED_OUT", timeout=30)
    assert "execution timeout" in job_status(slow["id"])["error"]
    wait_for(lambda: job_status(expiring["id"])["status"] == "TIMED_OUT", timeout=30)
    assert "ttl" in job_status(expiring["id"])["error"]
    time.sleep(2.5)  # the timed-out run finishes; the job stays TIMED_OUT
    assert job_status(slow["id"])["status"] == "TIMED_OUT"


def test_retry_a_failed_job(deployed: dict[str, str]) -> None:
    platform = platform_in(None)
    assert platform is not None
    job = platform.call("POST", "/v2/jobs/runsync", {
        "input": {"function": "fail", "message": "again"}})
    assert job["status"] == "FAILED"
    assert platform.call("POST", f"/v2/jobs/retry/{job['id']}") == {
        "id": job["id"], "status": "IN_QUEUE"}
    wait_for(lambda: job_status(job["id"])["status"] == "FAILED", timeout=60)


def test_bad_requests_are_clear(deployed: dict[str, str]) -> None:
    platform = platform_in(None)
    assert platform is not None
    from runpod_flash.http.blocking import request

    status, body = request("POST", f"{platform.url}/v2/jobs/run", b'{"no_input": 1}',
                           platform.auth, 10)
    assert status == 400 and b"input" in body
    big = json.dumps({"input": {"blob": "x" * (11 * 1024 * 1024)}}).encode()
    status, body = request("POST", f"{platform.url}/v2/jobs/run", big, platform.auth, 30)
    assert status == 413 and b"10 MB" in body
    status, _ = request("GET", f"{platform.url}/v2/jobs/status/nope", None, platform.auth, 10)
    assert status == 404
    status, body = request("POST", f"{platform.url}/v2/jobs/run",
                           json.dumps({"input": {"function": "nope"}}).encode(),
                           platform.auth, 10)
    job = json.loads(body)
    wait_for(lambda: job_status(job["id"])["status"] == "FAILED", timeout=60)
    assert "add" in job_status(job["id"])["error"]  # names the functions it has


def test_runpod_handler_script_serves_an_endpoint_and_streams(
    deployed: dict[str, str],
) -> None:
    endpoint = runpod.Endpoint("plain-worker")
    assert endpoint.run_sync({"hello": "world"}, timeout=60) == [{"echo": {"hello": "world"}}]
    job = endpoint.run({"stream": 3})
    chunks = list(job.stream())
    assert chunks == [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}]


DEPLOYED_STUBS = """
import asyncio, json, sys
sys.path.insert(0, ".")
import jobs

async def main():
    out = {"add": jobs.add(2, 3), "double": await jobs.double(21),
           "countdown": jobs.countdown(3)}
    try:
        jobs.fail("over quota")
    except jobs.QuotaExceeded as exc:
        out["fail"] = str(exc)
    print(json.dumps(out))

asyncio.run(main())
"""


def test_deployed_queue_functions_through_remote(deployed: dict[str, str], project: Path
                                                 ) -> None:
    result = run_python(DEPLOYED_STUBS, cwd=project)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "add": 5, "double": 42, "countdown": [3, 2, 1], "fail": "over quota"}


def test_load_balanced_route_awaits_queue_functions_of_other_endpoints(
    deployed: dict[str, str],
) -> None:
    from runpod_flash.http.blocking import request

    platform = platform_in(None)
    assert platform is not None
    status, body = request("POST", deployed["pipeline"] + "/pipeline", b'{"x": 4}', {}, 60)
    assert status == 200, body
    assert json.loads(body) == {"doubled": 8, "total": 9}


def test_worker_killed_mid_job_the_job_completes_elsewhere(deployed: dict[str, str]) -> None:
    endpoint = runpod.Endpoint("jobs")
    job = endpoint.run({"function": "slow", "seconds": 1.5, "tag": "survivor"})
    wait_for(lambda: job.status() == "IN_PROGRESS", timeout=60)
    victim = job_status(job.job_id)["workerId"]
    pid = next(w["pid"] for e in platform_status()["endpoints"] for w in e["workers"]
               if w["id"] == victim)
    os.kill(pid, signal.SIGKILL)
    output = job.output(timeout=60)
    assert output["tag"] == "survivor" and output["pid"] != pid
    assert job_status(job.job_id)["workerId"] != victim


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


def test_webhook_receives_the_result(deployed: dict[str, str]) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        platform = platform_in(None)
        assert platform is not None
        job = platform.call("POST", "/v2/jobs/run", {
            "input": {"function": "add", "a": 7, "b": 8},
            "webhook": f"http://127.0.0.1:{server.server_port}/hook"})
        wait_for(lambda: _Hook.received, timeout=30)
        assert _Hook.received[0]["id"] == job["id"]
        assert _Hook.received[0]["output"] == 15
    finally:
        server.shutdown()


LIVE_QUEUE = """
import json, os
from runpod_flash import CpuLiveServerless, remote

worker = CpuLiveServerless(name="live-queue")

class Refused(Exception):
    pass

@remote(worker)
def work(x):
    print("working on", x)
    if x < 0:
        raise Refused(f"negative: {x}")
    return {"x": x * 10, "pid": os.getpid()}

result = work(4)
try:
    work(-1)
except Refused as exc:
    refused = str(exc)
print(json.dumps({"result": result, "refused": refused, "me": os.getpid()}))
"""


def test_live_queue_function_runs_as_a_job() -> None:
    result = run_python(LIVE_QUEUE)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["result"]["x"] == 40 and out["result"]["pid"] != out["me"]
    assert out["refused"] == "negative: -1"
    assert "working on 4" in result.stdout


RESTART_PROJECT = """
import os, time
from runpod_flash import CpuServerlessEndpoint, remote

durable = CpuServerlessEndpoint(name="durable", workersMax=1)

@remote(durable)
def record(tag: str) -> str:
    time.sleep(0.3)
    with open(os.environ["FLASH_TEST_RUN_LOG"], "a") as handle:
        handle.write(tag + "\\n")
    return tag
"""


def test_platform_kill_9_with_jobs_queued_loses_none(tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "durable"
    home.mkdir()
    project.mkdir()
    (project / "durable.py").write_text(RESTART_PROJECT)
    log = tmp_path / "runs.log"
    env = {"FLASH_HOME": str(home), "FLASH_TEST_RUN_LOG": str(log)}
    try:
        assert flash("deploy", str(project), "--json", env=env).returncode == 0
        platform = platform_in(home)
        assert platform is not None
        ids = [platform.call("POST", "/v2/durable/run", {"input": {"tag": f"t{i}"}})["id"]
               for i in range(6)]
        pid = platform.call("GET", "/api/v1/status")["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), timeout=10)
        assert flash("platform", "start", env=env).returncode == 0
        platform = platform_in(home)
        assert platform is not None

        def all_done() -> bool:
            states = [platform.call("GET", f"/v2/durable/status/{i}")["status"] for i in ids]
            return all(state == "COMPLETED" for state in states)

        wait_for(all_done, timeout=90)
        outputs = [platform.call("GET", f"/v2/durable/status/{i}")["output"] for i in ids]
        assert outputs == [f"t{i}" for i in range(6)]
        runs = log.read_text().split()
        assert set(runs) == {f"t{i}" for i in range(6)}
    finally:
        stop_platform(home)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_pids_are_not_the_callers(deployed: dict[str, str]) -> None:
    assert os.getpid() not in worker_pids(platform_status(), "jobs")


LIVE_PIPELINE = """
import asyncio, json, os
from runpod_flash import CpuLiveLoadBalancer, CpuLiveServerless, remote

front = CpuLiveLoadBalancer(name="live-front")
inference = CpuLiveServerless(name="live-inference")

@remote(inference)
async def infer(x):
    return {"y": x + 1, "pid": os.getpid()}

@remote(front, method="POST", path="/predict")
async def predict(x):
    result = await infer(x * 2)
    return {"answer": result["y"], "inference_pid": result["pid"], "front_pid": os.getpid()}

out = asyncio.run(predict(5))
out["me"] = os.getpid()
print(json.dumps(out))
"""


def test_live_route_awaits_a_live_queue_function_of_another_endpoint() -> None:
    result = run_python(LIVE_PIPELINE)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["answer"] == 11
    assert len({out["inference_pid"], out["front_pid"], out["me"]}) == 3
