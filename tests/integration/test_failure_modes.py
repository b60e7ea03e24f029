"""The platform's own failure modes, with a real platform (one per test, in its own
FLASH_HOME) and real workers: worker templates that stall, leaked loops, restarts, draining,
crashes, busy workers, permissions, keys, queue caps and oversized arguments."""

from __future__ import annotations

import os
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    ProjectHome,
    flash,
    pid_alive,
    platform_in,
    stop_platform,
    wait_for,
)

SERVICE = textwrap.dedent("""
    import asyncio, os, signal, time
    from runpod_flash import CpuLiveLoadBalancer, CpuLiveServerless, remote

    api = CpuLiveLoadBalancer(name=os.environ.get("FM_NAME", "fm-api"))
    jobs = CpuLiveServerless(name="fm-jobs")

    @remote(api, method="GET", path="/pid")
    def pid() -> list[int]:
        return [os.getpid(), os.getppid()]

    @remote(api, method="POST", path="/block")
    async def block(seconds: float) -> int:
        time.sleep(seconds)  # blocks the worker's event loop, /ping included
        return os.getpid()

    @remote(api, method="POST", path="/stubborn")
    async def stubborn() -> list[int]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # outlives its platform's SIGTERM
        return [os.getpid(), os.getppid()]

    @remote(api, method="POST", path="/quick")
    async def quick() -> int:
        return 1

    @remote(api, method="POST", path="/size")
    def size(data: bytes) -> int:
        return len(data)

    @remote(jobs)
    def double(x: int) -> int:
        return 2 * x
""")


class Home(ProjectHome):
    """A private FLASH_HOME with its own platform (stopped at the end) and the service."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, SERVICE)

    def platform_pid(self) -> int:
        platform = platform_in(self.path)
        assert platform is not None
        return int(platform.call("GET", "/api/v1/status")["pid"])

    def log(self) -> str:
        return (self.path / "logs" / "platform.log").read_text(errors="replace")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    made = Home(tmp_path)
    try:
        yield made
    finally:
        stop_platform(made.path)


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def forked_worker(home: Home, call: str, **env: str) -> list[int]:
    """[pid, parent] of a worker forked by the zygote: the platform's first worker starts
    plainly while the zygote warms up, so endpoints are made until one is forked."""
    platform_pid = None
    for attempt in range(20):
        pid, parent = home.run(f"print(json.dumps({call}))",
                               FM_NAME=f"fm-fork-{attempt}", **env)
        platform_pid = platform_pid or home.platform_pid()
        if parent != platform_pid:
            return [pid, parent]
    raise AssertionError("no worker was forked by the zygote")


def test_a_stalled_zygote_spawn_falls_back_then_the_zygote_serves_again(home: Home) -> None:
    env = {"FLASH_ZYGOTE_SPAWN_TIMEOUT": "1"}
    _, zygote = forked_worker(home, "svc.pid()", **env)
    platform_pid = home.platform_pid()
    os.kill(zygote, signal.SIGSTOP)
    try:
        late, parent = home.run("print(json.dumps(svc.pid()))", FM_NAME="fm-late", **env)
        assert parent == platform_pid  # started plainly after the spawn timed out
    finally:
        os.kill(zygote, signal.SIGCONT)
    line = wait_for(lambda: [x for x in home.log().splitlines() if "killing it" in x])[0]
    leaked = int(line.split(" forked ")[1].split()[0])
    wait_for(lambda: not pid_alive(leaked))  # the copy forked too late is gone
    again, parent = home.run("print(json.dumps(svc.pid()))", FM_NAME="fm-after", **env)
    assert parent == zygote  # its reader survived: it forks again
    status = platform_in(home.path).call("GET", "/api/v1/status")  # type: ignore[union-attr]
    tracked = {w["pid"] for e in status["endpoints"] for w in e["workers"]}
    assert children_of(zygote) <= tracked and late in tracked and again in tracked


def test_async_calls_in_fresh_event_loops_leak_no_loops_or_sockets(home: Home) -> None:
    counts = home.run("""
        import gc, os

        def loops():
            gc.collect()
            return sum(isinstance(o, asyncio.AbstractEventLoop) for o in gc.get_objects())

        asyncio.run(svc.quick())
        before = (len(os.listdir("/proc/self/fd")), loops())
        for _ in range(20):
            asyncio.run(svc.quick())
        print(json.dumps([before, [len(os.listdir("/proc/self/fd")), loops()]]))
    """)
    (fds_before, loops_before), (fds_after, loops_after) = counts
    assert fds_after <= fds_before and loops_after <= loops_before


def test_live_queue_and_lb_calls_recover_after_the_platform_stops(home: Home) -> None:
    results = home.run("""
        import subprocess, sys
        first = [svc.double(2), len(svc.pid())]
        subprocess.run([sys.executable, "-m", "runpod_flash.cli", "platform", "stop"],
                       check=True, capture_output=True, timeout=60)
        print(json.dumps([first, [svc.double(3), len(svc.pid())]]))
    """)
    assert results == [[4, 2], [6, 2]]


DRAIN_PROJECT = """
import os, time
from runpod_flash import CpuServerlessEndpoint, remote

queue = CpuServerlessEndpoint(name="fm-drain", workersMin=1, workersMax=1)
VERSION = "{version}"

@remote(queue)
def work(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ["RUNPOD_POD_ID"] + "/" + VERSION
"""


def test_a_draining_queue_worker_takes_no_more_jobs(home: Home) -> None:
    project = home.project / "drain"
    project.mkdir()
    (project / "flash.toml").write_text("[endpoints.fm-drain]\nconcurrency = 4\n")
    (project / "app.py").write_text(DRAIN_PROJECT.format(version="v1"))
    assert flash("deploy", str(project), env=home.env).returncode == 0
    platform = platform_in(home.path)
    assert platform is not None
    long = platform.call("POST", "/v2/fm-drain/run", {"input": {"seconds": 12}})["id"]
    old = wait_for(lambda: platform.call("GET", f"/v2/fm-drain/status/{long}").get("workerId"))
    (project / "app.py").write_text(DRAIN_PROJECT.format(version="v2"))
    assert flash("deploy", str(project), env=home.env).returncode == 0  # old one drains
    assert platform.call("GET", f"/v2/fm-drain/status/{long}")["status"] == "IN_PROGRESS"
    outputs = [platform.call("POST", "/v2/fm-drain/runsync", {"input": {"seconds": 0}})
               for _ in range(6)]
    assert all(o["status"] == "COMPLETED" and o["output"].endswith("/v2") for o in outputs)
    assert all(o["workerId"] != old for o in outputs)
    done = wait_for(lambda: platform.call("GET", f"/v2/fm-drain/status/{long}")["status"]
                    == "COMPLETED", timeout=30)
    assert done


def test_a_restart_after_kill_9_stops_forked_workers_that_ignore_sigterm(home: Home) -> None:
    pid, zygote = forked_worker(home, "asyncio.run(svc.stubborn())")
    platform_pid = home.platform_pid()
    assert zygote != platform_pid
    os.kill(platform_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(platform_pid))
    wait_for(lambda: not pid_alive(zygote))  # the zygote follows its platform
    assert pid_alive(pid)  # the worker ignores the SIGTERM its lifeline sends
    assert flash("platform", "start", env=home.env).returncode == 0
    wait_for(lambda: not pid_alive(pid))


def test_a_worker_blocking_its_loop_for_6s_is_not_killed(home: Home) -> None:
    first, blocked, after = home.run("""
        first = svc.pid()[0]
        print(json.dumps([first, asyncio.run(svc.block(6)), svc.pid()[0]]))
    """, FLASH_HEALTH_INTERVAL="1")
    assert first == blocked == after
    assert "is unhealthy" not in home.log()


def test_flash_home_is_made_private_and_an_open_one_refused(home: Home, tmp_path: Path) -> None:
    home.path.mkdir(mode=0o755)
    home.path.chmod(0o755)
    assert flash("platform", "start", env=home.env).returncode == 0
    assert home.run("print(json.dumps(svc.double(1)))") == 2
    assert home.path.stat().st_mode & 0o777 == 0o700
    logs = home.path / "logs"
    private = [home.path / "state.db", logs / "platform.log", *logs.rglob("w-*.log")]
    assert len(private) >= 3
    assert {path.name: path.stat().st_mode & 0o777 for path in private} == {
        path.name: 0o600 for path in private}
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    refused = flash("platform", "start", env={**home.env, "FLASH_HOME": str(shared)})
    assert refused.returncode == 1 and "writable by other users" in refused.stdout
    assert not (shared / "state.db").exists()


def test_an_api_key_for_a_running_platform_is_refused_unless_in_effect(home: Home) -> None:
    assert flash("platform", "start", env=home.env).returncode == 0
    refused = flash("platform", "start", "--api-key", "sekret", env=home.env)
    assert refused.returncode == 1 and "does not require that key" in refused.stdout
    assert "sekret" not in refused.stdout
    assert flash("platform", "stop", env=home.env).returncode == 0
    assert flash("platform", "start", "--api-key", "sekret", env=home.env).returncode == 0
    again = flash("platform", "start", "--api-key", "sekret", env=home.env)
    assert again.returncode == 0 and "already running" in again.stdout


CAPPED_PROJECT = """
import time
from runpod_flash import CpuServerlessEndpoint, remote

capped = CpuServerlessEndpoint(name="fm-capped", workersMax=1)

@remote(capped)
def hold(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
"""


def test_past_the_queue_cap_run_answers_429(home: Home) -> None:
    project = home.project / "capped"
    project.mkdir()
    (project / "app.py").write_text(CAPPED_PROJECT)
    env = {**home.env, "FLASH_MAX_QUEUED_JOBS": "2"}
    assert flash("deploy", str(project), env=env).returncode == 0
    platform = platform_in(home.path)
    assert platform is not None
    running = platform.call("POST", "/v2/fm-capped/run", {"input": {"seconds": 30}})["id"]
    wait_for(lambda: platform.call("GET", f"/v2/fm-capped/status/{running}")["status"]
             == "IN_PROGRESS")
    for _ in range(2):
        platform.call("POST", "/v2/fm-capped/run", {"input": {"seconds": 0}})
    with pytest.raises(Exception, match=r"429.*FLASH_MAX_QUEUED_JOBS"):
        platform.call("POST", "/v2/fm-capped/run", {"input": {"seconds": 0}})
    platform.call("POST", "/v2/fm-capped/purge-queue")
    platform.call("POST", f"/v2/fm-capped/cancel/{running}")


def test_an_80_mb_argument_says_what_to_do_before_uploading(home: Home) -> None:
    text = home.run("""
        try:
            svc.size(b"x" * (80 * 1024 * 1024))
        except ValueError as exc:
            print(json.dumps(str(exc)))
    """)
    for part in ("size()", "fm-api", "MB once encoded", "over the 64 MB limit",
                 "FLASH_MAX_BODY_MB", "/runpod-volume"):
        assert part in text
    assert len(text) < 1000
