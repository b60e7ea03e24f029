"""`flash deploy` of the seed's Complete Working Example, used over HTTP and through @remote."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import flash, platform_in, platform_status, run_python, stop_platform, wait_for
from runpod_flash import config

PROJECT = Path(__file__).parent / "projects" / "user_service"




def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        payload, status = error.read(), error.code
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode(errors="replace")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("deploy") / "user_service"
    shutil.copytree(PROJECT, target)
    return target


@pytest.fixture(scope="module")
def deployed(project: Path) -> Iterator[dict[str, str]]:
    """The project deployed on the session platform: {endpoint name: URL}."""
    result = flash("deploy", str(project), "--json")
    assert result.returncode == 0, result.stderr
    urls = {r["name"]: r["url"] for r in json.loads(result.stdout)}
    yield urls
    flash("undeploy", "--all", "--yes")


def test_ping_answers_healthy(deployed: dict[str, str]) -> None:
    assert http("GET", deployed["user-service"] + "/ping") == (200, {"status": "healthy"})


def test_seed_curl_call(deployed: dict[str, str]) -> None:
    # curl -X POST <endpoint-url>/api/process -H "Content-Type: application/json" -d '{...}'
    result = subprocess.run(
        ["curl", "-s", "-X", "POST", deployed["processor"] + "/api/process",
         "-H", "Content-Type: application/json", "-d", '{"x": 5, "y": 3}'],
        capture_output=True, text=True, timeout=30,
    ) if shutil.which("curl") else None
    if result is not None:
        assert json.loads(result.stdout) == {"result": 8}
    assert http("POST", deployed["processor"] + "/api/process", {"x": 5, "y": 3}) == (
        200, {"result": 8})


def test_users_crud_over_http(deployed: dict[str, str]) -> None:
    base = deployed["user-service"]
    assert http("GET", base + "/health") == (200, {"status": "healthy"})
    status, created = http("POST", base + "/users", {"name": "Zoe", "email": "zoe@example.com"})
    assert status == 200 and created["name"] == "Zoe"
    assert http("GET", f"{base}/users/{created['id']}")[1]["email"] == "zoe@example.com"
    assert http("PUT", f"{base}/users/{created['id']}", {"name": "Zoey"})[1]["name"] == "Zoey"
    assert http("DELETE", f"{base}/users/{created['id']}") == (200, {"deleted": True})
    assert http("GET", f"{base}/users/{created['id']}") == (
        500, {"error": f"User {created['id']} not found", "error_type": "UserNotFound"})


def test_http_errors_are_clear(deployed: dict[str, str]) -> None:
    base = deployed["user-service"]
    status, body = http("POST", base + "/users", {"name": "NoEmail"})
    assert status == 422 and "email" in json.dumps(body)
    assert http("GET", base + "/users/abc")[0] == 422
    assert http("POST", base + "/users", raw=b"{not json")[0] in (400, 422)
    over = b"x" * (config.max_body_bytes() + 1)  # FLASH_MAX_BODY_MB, for gateway and workers
    assert http("POST", base + "/users", raw=over)[0] == 413
    assert http("POST", base + "/execute", {"function_name": "x"})[0] == 404


STUB_CALLS = """
import asyncio, json
import user_service as s

async def main():
    created = await s.create_user("Stub", "stub@example.com")
    fetched = s.get_user(created["id"])
    updated = await s.update_user(created["id"], email="new@example.com")
    deleted = await s.delete_user(created["id"])
    try:
        s.get_user(created["id"])
        missing = None
    except s.UserNotFound as exc:
        missing = str(exc)
    try:
        s.get_user({1, 2})
        bad = None
    except TypeError as exc:
        bad = str(exc)
    print(json.dumps({"created": created, "fetched": fetched, "updated": updated,
                      "deleted": deleted, "missing": missing, "bad": bad,
                      "users": s.list_users()["users"], "url": s.api.endpoint_url}))

asyncio.run(main())
"""


def test_users_crud_through_remote_stubs(deployed: dict[str, str], project: Path) -> None:
    result = run_python(STUB_CALLS, cwd=project)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["fetched"] == out["created"]
    assert out["updated"]["email"] == "new@example.com"
    assert out["deleted"] == {"deleted": True}
    assert out["missing"] == f"User {out['created']['id']} not found"
    assert "cannot be sent as JSON" in out["bad"]
    assert out["url"] == deployed["user-service"]
    assert {u["name"] for u in out["users"]} >= {"Alice", "Bob"}


def test_deploying_again_without_changes_changes_nothing(
    deployed: dict[str, str], project: Path
) -> None:
    before = platform_status()
    result = flash("deploy", str(project), "--json")
    assert result.returncode == 0, result.stderr
    assert {r["action"] for r in json.loads(result.stdout)} == {"unchanged"}
    after = platform_status()
    versions = {e["name"]: e["version"] for e in before["endpoints"]}
    assert {e["name"]: e["version"] for e in after["endpoints"]} == versions


def test_status_lists_endpoint_type_url_routes_and_workers(deployed: dict[str, str]) -> None:
    result = flash("status", "--json")
    assert result.returncode == 0, result.stderr
    endpoints = {e["name"]: e for e in json.loads(result.stdout)["endpoints"]}
    service = endpoints["user-service"]
    assert service["kind"] == "deployed" and service["type"] == "LB"
    assert service["url"] == deployed["user-service"]
    assert "GET /users/{user_id}" in service["routes"]
    assert any(w["state"] == "ready" for w in service["workers"])
    table = flash("status")
    assert table.returncode == 0 and "user-service" in table.stdout


def test_undeploy_all_asks_first(deployed: dict[str, str]) -> None:
    declined = subprocess.run(
        [sys.executable, "-m", "runpod_flash.cli", "undeploy", "--all"], input="n\n",
        capture_output=True, text=True, timeout=60,
    )
    assert declined.returncode == 1 and "Undeploy" in declined.stdout
    assert http("GET", deployed["user-service"] + "/ping")[0] == 200


def test_logs_show_worker_output(deployed: dict[str, str]) -> None:
    http("GET", deployed["user-service"] + "/users/424242")  # logs a traceback
    result = flash("logs", "user-service")
    assert result.returncode == 0, result.stderr
    assert "User 424242 not found" in result.stdout


def test_redeploy_under_load_loses_no_request(deployed: dict[str, str], project: Path) -> None:
    base = deployed["processor"]
    failures: list[Any] = []
    answers: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            status, body = http("POST", base + "/api/process", {"x": 1, "y": 2})
            if status != 200:
                failures.append((status, body))
            else:
                answers.append(body["result"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        source = project / "processor.py"
        source.write_text(source.read_text().replace("x + y", "x + y + 100"))
        result = flash("deploy", str(project), "--json")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: answers and answers[-1] == 103, timeout=20)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:3]
    assert 3 in answers and 103 in answers


def _evil_artifact() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("flash_manifest.json", b"{}"), ("../escaped.txt", b"gotcha")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_path_traversal_and_corrupt_artifacts_are_rejected(deployed: dict[str, str]) -> None:
    platform = platform_in(None)
    assert platform is not None
    for payload in (_evil_artifact(), gzip.compress(b"not a tar")):
        sha = hashlib.sha256(payload).hexdigest()
        status, body = http("PUT", f"{platform.url}/api/v1/artifacts/{sha}", raw=payload,
                            headers={"Authorization": f"Bearer {platform.token}"})
        assert status == 400, body
        assert "artifact" in body["error"]
    home = Path(os.environ["FLASH_HOME"])
    assert not list(home.rglob("escaped.txt"))
    assert http("GET", deployed["user-service"] + "/ping")[0] == 200  # still serving


def test_build_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "api.py").write_text(
        "from runpod_flash import LoadBalancerSlsResource, remote\n"
        "api = LoadBalancerSlsResource(name='dup')\n"
        "@remote(api, method='POST', path='/api/process')\n"
        "def one(x: int):\n    return x\n"
        "@remote(api, method='POST', path='/api/process')\n"
        "def two(x: int):\n    return x\n"
    )
    result = flash("build", str(tmp_path))
    assert result.returncode == 1
    assert "Route conflict detected: POST /api/process defined twice" in result.stderr
    assert "api.py:" in result.stderr
    assert "Traceback" not in result.stderr


def test_undeploy_removes_the_routes(project: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (single / "temp_api.py").write_text(
        "from runpod_flash import CpuLoadBalancerSlsResource, remote\n"
        "api = CpuLoadBalancerSlsResource(name='short-lived')\n"
        "@remote(api, method='GET', path='/hi')\n"
        "def hi():\n    return 'hi'\n"
    )
    deployed = flash("deploy", str(single), "--json")
    assert deployed.returncode == 0, deployed.stderr
    url = json.loads(deployed.stdout)[0]["url"]
    assert http("GET", url + "/hi") == (200, "hi")
    result = flash("undeploy", "short-lived")
    assert result.returncode == 0, result.stderr
    assert http("GET", url + "/hi")[0] == 404
    assert "short-lived" not in {e["name"] for e in platform_status()["endpoints"]}


PROGRAMMATIC = """
import asyncio, json
from runpod_flash import CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="programmatic")

@remote(api, method="GET", path="/square/{n}")
def square(n: int):
    return n * n

async def main():
    try:
        square(3)
    except ValueError as exc:
        before = str(exc)
    await api.deploy()
    print(json.dumps({"before": before, "url": api.endpoint_url, "value": square(7)}))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_resource_deploy_fills_endpoint_url(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "app.py").write_text(PROGRAMMATIC)
    try:
        result = run_python(str(tmp_path / "app.py"), env={"FLASH_HOME": str(home)},
                            cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert out["before"] == "Endpoint URL not available - endpoint may not be deployed"
        assert out["url"].endswith("/ep/programmatic") and out["value"] == 49
    finally:
        stop_platform(home)


def test_api_key_protects_deployed_endpoints(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    project = tmp_path / "keyed"
    project.mkdir()
    (project / "keyed.py").write_text(
        "from runpod_flash import CpuLoadBalancerSlsResource, remote\n"
        "api = CpuLoadBalancerSlsResource(name='keyed')\n"
        "@remote(api, method='GET', path='/secret')\n"
        "def secret():\n    return 42\n"
    )
    env = {"FLASH_HOME": str(home)}
    try:
        assert flash("platform", "start", "--api-key", "s3cret", env=env).returncode == 0
        result = flash("deploy", str(project), "--json", env=env)
        assert result.returncode == 0, result.stderr
        url = json.loads(result.stdout)[0]["url"]
        assert http("GET", url + "/secret")[0] == 401
        assert http("GET", url + "/secret", headers={"Authorization": "Bearer nope"})[0] == 401
        assert http("GET", url + "/secret", headers={"Authorization": "Bearer s3cret"}) == (
            200, 42)
    finally:
        stop_platform(home)
