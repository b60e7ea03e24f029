"""Live endpoints leave no trail: unused past their idle timeout they go (workers and entry),
the next call provisions them again, and `flash undeploy --live` clears the rest at once."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ProjectHome, flash, pid_alive, stop_platform, wait_for

SERVICE = textwrap.dedent("""
    import os
    from runpod_flash import CpuLiveLoadBalancer, CpuLiveServerless, remote

    brief = CpuLiveLoadBalancer(name="cleanup-brief", idleTimeout=1)
    jobs = CpuLiveServerless(name="cleanup-jobs", idleTimeout=1)
    warm = CpuLiveLoadBalancer(name="cleanup-warm", workersMin=1, idleTimeout=1)

    @remote(brief, method="POST", path="/pid")
    async def brief_pid() -> int:
        return os.getpid()

    @remote(jobs)
    async def job_pid() -> int:
        return os.getpid()

    @remote(warm, method="POST", path="/pid")
    async def warm_pid() -> int:
        return os.getpid()
""")


class Home(ProjectHome):
    def __init__(self, root: Path) -> None:
        super().__init__(root, SERVICE)

    def call(self, function: str) -> int:
        return int(self.run(f"print(asyncio.run(svc.{function}()))"))

    def live(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.status()["endpoints"] if e["kind"] == "live"}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    home = Home(tmp_path)
    try:
        yield home
    finally:
        stop_platform(home.path)


def test_unused_live_endpoints_go_and_come_back_on_the_next_call(home: Home) -> None:
    first = home.call("brief_pid")  # each call provisions its live endpoint
    job_worker = home.call("job_pid")
    wait_for(lambda: not {"cleanup-brief", "cleanup-jobs"} & set(home.live()), timeout=30)
    # The entry goes first (no new traffic), then the workers drain and exit.
    wait_for(lambda: not pid_alive(first) and not pid_alive(job_worker), timeout=30)
    again = home.call("brief_pid")  # provisioned afresh, transparently
    assert again != first and "cleanup-brief" in home.live()


def test_undeploy_live_clears_live_endpoints_kept_warm(home: Home) -> None:
    pid = home.call("warm_pid")
    assert "cleanup-warm" in home.live() and pid_alive(pid)
    result = flash("undeploy", "--live", env=home.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "removed 1 live endpoint(s)" in result.stdout
    assert home.live() == {}
    wait_for(lambda: not pid_alive(pid), timeout=30)
    listed = flash("undeploy", "--live", env=home.env)
    assert "removed 0 live endpoint(s)" in listed.stdout


def test_undeploy_live_with_a_name_is_refused(home: Home) -> None:
    result = flash("undeploy", "x", "--live", env=home.env)
    assert result.returncode != 0
    assert "one of them" in result.stdout + result.stderr
