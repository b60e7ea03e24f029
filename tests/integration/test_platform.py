"""The embedded platform as a process: start-up races, auth, scaling to zero, CLI, GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    pid_alive,
    platform_in,
    platform_status,
    run_python,
    stop_platform,
    wait_for,
    worker_pids,
)
from runpod_flash import CpuLiveLoadBalancer, LiveLoadBalancer, remote
from runpod_flash.platform.gpus import detect_gpus
from runpod_flash.stubs.live import GpuFallbackWarning

idle_api = CpuLiveLoadBalancer(name="platform-idle", idleTimeout=1)
warm_api = CpuLiveLoadBalancer(name="platform-warm", workersMin=1, idleTimeout=1)
gpu_api = LiveLoadBalancer(name="platform-gpu")


@remote(idle_api, method="GET", path="/pid")
def idle_pid() -> int:
    print("worker output goes to its log file")
    return os.getpid()


@remote(warm_api, method="GET", path="/pid")
def warm_pid() -> int:
    return os.getpid()


@remote(gpu_api, method="GET", path="/gpus")
def visible_gpus() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[Path]:
    """A FLASH_HOME no platform has used yet; its platform is stopped afterwards."""
    home = tmp_path / "flash-home"
    home.mkdir()
    yield home
    stop_platform(home)


FIRST_CALL = """
import os
from runpod_flash import CpuLiveLoadBalancer, remote
api = CpuLiveLoadBalancer(name="race")
@remote(api, method="GET", path="/pid")
def pid():
    return os.getpid()
print(pid())
"""


def test_two_processes_first_call_together_share_one_platform_and_endpoint(
    fresh_home: Path,
) -> None:
    env = {**os.environ, "FLASH_HOME": str(fresh_home)}
    callers = [
        subprocess.Popen([sys.executable, "-c", FIRST_CALL], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [caller.communicate(timeout=60) for caller in callers]
    assert [caller.returncode for caller in callers] == [0, 0], outputs
    log = (fresh_home / "logs" / "platform.log").read_text()
    assert log.count("listening on") == 1
    status = platform_status(fresh_home)
    assert [e["name"] for e in status["endpoints"]] == ["race"]
    worker_pid = {int(out.strip()) for out, _ in outputs}
    assert worker_pid <= set(worker_pids(status, "race"))


def test_control_api_and_execute_need_the_platform_token() -> None:
    assert idle_pid() != os.getpid()
    platform = platform_in(None)
    assert platform is not None
    assert platform.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(platform.url + "/health", timeout=5) as response:
        assert json.load(response)["status"] == "ok"
    endpoint = next(e for e in platform_status()["endpoints"] if e["name"] == "platform-idle")
    for url, method in (
        (platform.url + "/api/v1/status", "GET"),
        (platform.url + endpoint["path"] + "/execute", "POST"),
    ):
        request = urllib.request.Request(url, data=b"{}" if method == "POST" else None,
                                         method=method,
                                         headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401


def test_idle_worker_stops_after_idle_timeout_and_logs_to_a_file() -> None:
    pid = idle_pid()
    endpoint = next(e for e in platform_status()["endpoints"] if e["name"] == "platform-idle")
    log_file = Path(next(w["log"] for w in endpoint["workers"] if w["pid"] == pid))
    wait_for(lambda: not pid_alive(pid), timeout=15)
    assert not worker_pids(platform_status(), "platform-idle")
    assert "worker output goes to its log file" in log_file.read_text()
    assert idle_pid() != pid  # the next call starts a fresh worker


def test_workers_min_stays_warm_past_idle_timeout() -> None:
    pid = warm_pid()
    time.sleep(3)  # three idle timeouts
    assert worker_pids(platform_status(), "platform-warm") == [pid]
    assert warm_pid() == pid


@pytest.mark.skipif(bool(detect_gpus()), reason="this machine has GPUs")
def test_gpu_resource_without_gpus_runs_on_cpu_with_one_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert visible_gpus() == ""
        assert visible_gpus() == ""
    fallbacks = [w for w in caught if issubclass(w.category, GpuFallbackWarning)]
    assert len(fallbacks) == 1
    assert "platform-gpu" in str(fallbacks[0].message)


GPU_CALLS = """
import os
from runpod_flash import CpuLiveLoadBalancer, LiveLoadBalancer, remote
one = LiveLoadBalancer(name="one-gpu")
two = LiveLoadBalancer(name="two-gpus", gpuCount=2)
cpu = CpuLiveLoadBalancer(name="no-gpu")
def visible():
    return os.environ.get("CUDA_VISIBLE_DEVICES")
print(remote(one, method="GET", path="/v")(visible)(),
      remote(two, method="GET", path="/v")(visible)(),
      repr(remote(cpu, method="GET", path="/v")(visible)()))
"""


def test_workers_get_the_gpus_their_resource_asks_for(fresh_home: Path) -> None:
    result = run_python(
        GPU_CALLS, env={"FLASH_HOME": str(fresh_home), "CUDA_VISIBLE_DEVICES": "0,1"}
    )
    assert result.returncode == 0, result.stderr
    one, two, cpu = result.stdout.split()
    assert one in ("0", "1") and two == "0,1" and cpu == "''"


def test_cli_platform_start_status_stop(fresh_home: Path) -> None:
    env = {**os.environ, "FLASH_HOME": str(fresh_home)}

    def flash(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runpod_flash.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    started = flash("platform", "start")
    assert started.returncode == 0 and "platform started at http://127.0.0.1:" in started.stdout
    assert "already running" in flash("platform", "start").stdout
    status = json.loads(flash("platform", "status", "--json").stdout)
    assert status["endpoints"] == [] and pid_alive(status["pid"])
    stopped = flash("platform", "stop")
    assert stopped.returncode == 0 and f"platform {status['pid']} stopped" in stopped.stdout
    assert not pid_alive(status["pid"])
    missing = flash("platform", "status")
    assert missing.returncode == 1 and "no platform is running" in missing.stdout


KILLED_PLATFORM = """
import os, signal, json, time
from runpod_flash import CpuLiveLoadBalancer, remote
from runpod_flash.control import find_running
api = CpuLiveLoadBalancer(name="survivor")
@remote(api, method="GET", path="/pid")
def pid():
    return os.getpid()
first = pid()
platform = find_running().call("GET", "/api/v1/status")["pid"]
os.kill(platform, signal.SIGKILL)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:  # SIGKILL lands asynchronously; the next call is after
    try:
        os.kill(platform, 0)
    except ProcessLookupError:
        break
    time.sleep(0.01)
second = pid()
print(json.dumps({"first": first, "second": second, "old_platform": platform}))
"""


def test_call_after_platform_kill_9_starts_a_new_platform(fresh_home: Path) -> None:
    result = run_python(KILLED_PLATFORM, env={"FLASH_HOME": str(fresh_home)})
    assert result.returncode == 0, result.stderr
    pids = json.loads(result.stdout.strip().splitlines()[-1])
    assert pids["second"] != pids["first"]
    wait_for(lambda: not pid_alive(pids["first"]), timeout=10)  # orphan worker exited
    assert platform_status(fresh_home)["pid"] != pids["old_platform"]
