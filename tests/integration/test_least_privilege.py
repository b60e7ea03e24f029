"""Least privilege: user code in workers holds only its own worker's token, and workers
answer only the platform's gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from helpers import flash, platform_in, platform_status
from runpod_flash import CpuLiveLoadBalancer, remote
from runpod_flash.http.blocking import request

probe = CpuLiveLoadBalancer(name="least-privilege")


@remote(probe, method="POST", path="/try")
def try_platform(calls: list) -> dict:
    """From inside a worker: what its credential is allowed to do on the platform."""
    import os

    from runpod_flash.http.blocking import request

    token = os.environ["FLASH_PLATFORM_TOKEN"]
    url = os.environ["FLASH_PLATFORM_URL"]
    answers = {}
    for method, path in calls:
        status, _ = request(method, url + path, b"{}",
                            {"Authorization": f"Bearer {token}"}, 10)
        answers[f"{method} {path}"] = status
    return {"token": token, "secret_set": bool(os.environ.get("FLASH_GATEWAY_SECRET")),
            "answers": answers}


def test_a_worker_holds_its_own_token_which_the_control_api_refuses() -> None:
    seen = try_platform([
        ("GET", "/api/v1/status"), ("POST", "/api/v1/shutdown"),
        ("POST", "/api/v1/deployments"), ("GET", "/api/v1/apps"),
        ("POST", "/v2/some-queue/runsync"),
    ])
    platform = platform_in(None)
    assert platform is not None
    assert seen["token"] != platform.token and seen["secret_set"]
    assert seen["answers"] == {
        "GET /api/v1/status": 403, "POST /api/v1/shutdown": 403,
        "POST /api/v1/deployments": 403, "GET /api/v1/apps": 403,
        "POST /v2/some-queue/runsync": 404,
    }
    assert platform_in(None) is not None  # still running


def _worker_port(name: str) -> int:
    endpoint = next(e for e in platform_status()["endpoints"] if e["name"] == name)
    return next(w["port"] for w in endpoint["workers"] if w["state"] == "ready")


def test_a_live_workers_port_refuses_requests_that_bypass_the_gateway() -> None:
    try_platform([])  # the endpoint has a ready worker
    platform = platform_in(None)
    assert platform is not None
    port = _worker_port("least-privilege")
    for path in ("/execute", "/ping"):
        status, body = request("POST" if path == "/execute" else "GET",
                               f"http://127.0.0.1:{port}{path}", b"{}",
                               {"Authorization": f"Bearer {platform.token}"}, 10)
        assert status == 403 and b"only its platform's gateway" in body


WHOAMI = """
import os

from runpod_flash import CpuLiveServerless, CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="privilege-api")
jobs = CpuLiveServerless(name="privilege-jobs")


@remote(api, method="GET", path="/whoami")
def whoami() -> dict:
    return {"token": os.environ["FLASH_PLATFORM_TOKEN"]}


@remote(jobs)
def noop() -> str:
    return "ok"
"""


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    project = tmp_path_factory.mktemp("privilege") / "privilege"
    project.mkdir()
    (project / "service.py").write_text(WHOAMI)
    result = flash("deploy", str(project), "--json")
    assert result.returncode == 0, result.stderr
    yield {r["name"]: r["path"] for r in json.loads(result.stdout)}
    flash("app", "delete", "privilege", "--force")


def test_a_deployed_workers_token_reaches_its_peers_and_nothing_else(
    deployed: dict[str, str],
) -> None:
    platform = platform_in(None)
    assert platform is not None
    status, data = request("GET", platform.url + deployed["privilege-api"] + "/whoami", None,
                           {}, 30)
    assert status == 200, data
    token = json.loads(data)["token"]
    assert token != platform.token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    status, _ = request("POST", platform.url + deployed["privilege-jobs"] + "/run",
                        json.dumps({"input": {}}).encode(), headers, 10)
    assert status == 200  # its own deployment's endpoint
    status, _ = request("GET", platform.url + "/api/v1/status", None, headers, 10)
    assert status == 403
    try_platform([])  # a live endpoint: a deployed worker's token may not run code there
    live = next(e for e in platform_status()["endpoints"] if e["name"] == "least-privilege")
    status, _ = request("POST", platform.url + live["path"] + "/execute", b"{}", headers, 10)
    assert status == 401


@remote(probe, method="POST", path="/holds")
def holds(secret: str) -> list:
    """The names of the worker's environment variables whose value contains `secret`."""
    import os

    return sorted(name for name, value in os.environ.items() if secret in value)


def test_no_worker_environment_holds_the_platform_token_or_the_api_key() -> None:
    platform = platform_in(None) or (try_platform([]) and platform_in(None))
    assert platform is not None
    assert holds(platform.token) == []
