"""A platform listening on a machine address (`--host`), for workers on other machines:
live load-balanced and queue calls work through it, and a wildcard address is refused."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ProjectHome, flash, stop_platform

SERVICE = textwrap.dedent("""
    from runpod_flash import CpuLiveLoadBalancer, CpuLiveServerless, remote

    api = CpuLiveLoadBalancer(name="host-api")
    jobs = CpuLiveServerless(name="host-jobs")

    @remote(api, method="POST", path="/next")
    async def following(a: int) -> int:
        return a + 1

    @remote(jobs)
    async def double(a: int) -> int:
        return a * 2
""")


def machine_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture
def home(tmp_path: Path) -> Iterator[ProjectHome]:
    address = machine_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    made = ProjectHome(tmp_path, SERVICE, FLASH_PLATFORM_HOST=address)
    try:
        yield made
    finally:
        stop_platform(made.path)


def test_calls_work_through_a_platform_on_a_machine_address(home: ProjectHome) -> None:
    assert home.run("print(json.dumps([asyncio.run(svc.following(1)), "
                    "asyncio.run(svc.double(2))]))") == [2, 4]
    address = home.env["FLASH_PLATFORM_HOST"]
    endpoints = home.status()["endpoints"]
    assert {e["name"] for e in endpoints} == {"host-api", "host-jobs"}
    log = (home.path / "logs" / "platform.log").read_text()
    assert f"listening on http://{address}:" in log and "plain HTTP" in log


def test_a_wildcard_address_is_refused_naming_the_fix(tmp_path: Path) -> None:
    result = flash("platform", "start", "--host", "0.0.0.0",
                   env={"FLASH_HOME": str(tmp_path / "home"), "FLASH_PLATFORM_PORT": "0"})
    assert result.returncode != 0
    assert "FLASH_PLATFORM_HOST='0.0.0.0'" in result.stdout + result.stderr
