"""The original API's resource methods on a real platform: deploy, run, runsync, the endpoint
handle, url, is_deployed and undeploy, for deployed and live resources; network volumes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import platform_in, run_python
from runpod_flash.control import PlatformError

WORKERS = '''
from runpod_flash import CpuServerlessEndpoint, remote

jobs = CpuServerlessEndpoint(name="resapi-jobs", workersMax=1, executionTimeoutMs=20000)


@remote(jobs)
def add(a: int, b: int) -> dict:
    return {"sum": a + b}
'''

# Written the way code for the original is: its module paths, its models, its methods.
DRIVE = '''
import asyncio, json

from runpod_flash import NetworkVolume
from runpod_flash.core.resources.serverless import JobOutput, ServerlessHealth
from workers import jobs


async def main():
    out = {"before": jobs.is_deployed()}
    assert await jobs.deploy() is jobs
    out.update(after=jobs.is_deployed(), url=jobs.url, id=jobs.id, str=str(jobs))
    sync = await jobs.runsync({"a": 2, "b": 3})
    assert isinstance(sync, JobOutput)
    out["runsync"] = sync.model_dump()
    out["run"] = (await jobs.run({"input": {"a": 4, "b": 5}})).model_dump()
    out["failed"] = (await jobs.runsync({"a": 1})).model_dump()
    handle = jobs.endpoint
    job = handle.run({"a": 6, "b": 7})
    out["job_output"] = job.output(timeout=30)
    out["job_status"] = job.status()
    out["run_sync"] = handle.run_sync({"a": 1, "b": 1}, timeout=30)
    out["completed"] = ServerlessHealth(**handle.health()).jobs.completed
    volume = NetworkVolume(name="resapi-data", size=5)
    out["volume_before"] = [volume.is_created, volume.is_deployed()]
    await volume.deploy()
    out["volume_after"] = [volume.is_created, volume.is_deployed(), volume.id, str(volume)]
    out["undeploy"] = await jobs.undeploy()
    out["after_undeploy"] = [jobs.is_deployed(), jobs.id]
    out["undeploy_again"] = await jobs.undeploy()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
'''

LIVE = '''
import asyncio, json
from runpod_flash import CpuLiveServerless, remote

live = CpuLiveServerless(name="resapi-live")


@remote(live)
def double(x):
    return x * 2


async def main():
    out = {"before": live.is_deployed(), "first": double(4)}
    out.update(after=live.is_deployed(), url=live.url, id=live.id)
    out["health"] = live.endpoint.health()["workers"]["ready"]
    out["undeploy"] = await live.undeploy()
    out["after_undeploy"] = live.is_deployed()
    out["again"] = double(5)  # provisions a new live endpoint
    out["redeployed"] = live.is_deployed()
    await live.undeploy()
    print(json.dumps(out))

asyncio.run(main())
'''


def _last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project whose script deploys its own resource; the endpoint and volume it makes
    are removed afterwards even when the test fails."""
    folder = tmp_path / "resapi"
    folder.mkdir()
    (folder / "workers.py").write_text(WORKERS)
    (folder / "drive.py").write_text(DRIVE)
    yield folder
    platform = platform_in(None)
    if platform is not None:
        for path in ("/api/v1/endpoints/resapi-jobs", "/api/v1/volumes/resapi-data?force=1"):
            with contextlib.suppress(PlatformError):
                platform.call("DELETE", path)


def test_deployed_resource_api(project: Path) -> None:
    result = run_python(str(project / "drive.py"), cwd=project, timeout=240)
    assert result.returncode == 0, result.stderr
    out = _last_json(result.stdout)
    platform = platform_in(None)
    assert platform is not None
    assert (out["before"], out["after"]) == (False, True)
    assert out["url"] == f"{platform.url}/v2/resapi-jobs"
    assert (out["id"], out["str"]) == ("resapi-jobs", "CpuServerlessEndpoint:resapi-jobs")
    assert out["runsync"]["status"] == "COMPLETED"
    assert out["runsync"]["output"] == {"sum": 5}
    assert out["runsync"]["workerId"] and out["runsync"]["executionTime"] >= 0
    assert (out["run"]["status"], out["run"]["output"]) == ("COMPLETED", {"sum": 9})
    assert out["failed"]["status"] == "FAILED" and "b" in out["failed"]["error"]
    assert (out["job_output"], out["job_status"]) == ({"sum": 13}, "COMPLETED")
    assert out["run_sync"] == {"sum": 2}
    assert out["completed"] >= 4
    assert out["volume_before"] == [False, False]
    assert out["volume_after"] == [True, True, "resapi-data", "NetworkVolume:resapi-data"]
    assert out["undeploy"] == {
        "success": True, "name": "resapi-jobs", "endpoint_id": "resapi-jobs",
        "message": "Successfully undeployed 'resapi-jobs' (resapi-jobs)",
    }
    assert out["after_undeploy"] == [False, None]
    assert out["undeploy_again"]["success"] is False
    with pytest.raises(PlatformError, match="404"):
        platform.call("GET", "/api/v1/endpoints/resapi-jobs")


def test_live_resource_api() -> None:
    result = run_python(LIVE, timeout=240)
    assert result.returncode == 0, result.stderr
    out = _last_json(result.stdout)
    platform = platform_in(None)
    assert platform is not None
    assert (out["before"], out["first"], out["after"]) == (False, 8, True)
    assert out["url"] == f"{platform.url}/v2/{out['id']}"
    assert out["id"].startswith("live-resapi-live-")
    assert out["health"] >= 1
    assert out["undeploy"]["success"] is True and out["undeploy"]["endpoint_id"] == out["id"]
    assert out["after_undeploy"] is False
    assert (out["again"], out["redeployed"]) == (10, True)
