"""Bad input against a real platform over raw HTTP: each is a 4xx naming the problem, and
nothing it touches (the queue, a worker, the platform's memory) is harmed by it.

One small project (a load-balanced and a queue endpoint) is deployed on the session platform.
"""

from __future__ import annotations

import http.client
import json
import select
import shutil
import socket
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import flash, platform_in, platform_status, wait_for

SERVICE = textwrap.dedent("""
    from runpod_flash import CpuLoadBalancerSlsResource, CpuServerlessEndpoint, remote

    api = CpuLoadBalancerSlsResource(name="strict-api")
    queue = CpuServerlessEndpoint(name="strict-queue", workersMax=1)


    @remote(api, method="POST", path="/echo")
    def echo(data: dict) -> dict:
        return data


    @remote(api, method="GET", path="/average")
    def average() -> dict:
        return {"mean": float("nan")}


    @remote(queue)
    def add(a: int, b: int) -> int:
        return a + b


    @remote(queue)
    def ratio() -> dict:
        return {"ratio": float("inf")}
""")
RUN_LIMIT = 10 * 1024 * 1024  # the default /run limit (FLASH_MAX_RUN_MB)
CHUNK = b" " * (1024 * 1024)  # whitespace: a body that would parse, were it read
UPLOAD_CHUNKS = 200  # a 200 MB body, 20x the limit


def call(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request with exactly these headers (no Content-Type unless given): (status, JSON
    answer, or its text)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body, headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data.decode(errors="replace")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """{"platform", "token", "api", "queue"}: URLs of the platform and the two endpoints."""
    project = tmp_path_factory.mktemp("bad-input") / "strict_app"
    project.mkdir()
    (project / "service.py").write_text(SERVICE)
    result = flash("deploy", str(project), "--json")
    assert result.returncode == 0, result.stderr
    urls = {r["name"]: r["url"] for r in json.loads(result.stdout)}
    platform = platform_in(None)
    assert platform is not None
    yield {"platform": platform.url, "token": platform.token, "api": urls["strict-api"],
           "queue": f"{platform.url}/v2/{urls['strict-queue'].rstrip('/').rsplit('/', 1)[-1]}"}
    flash("undeploy", "--all", "--yes")
    shutil.rmtree(project, ignore_errors=True)


def auth(site: dict[str, str], content_type: str | None = "application/json"
         ) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {site['token']}"}
    return {**headers, "Content-Type": content_type} if content_type else headers


DEEP = b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(("body", "named"), [
    (b'{"input": {"x": NaN}}', "NaN is not valid JSON"),
    (b'{"input": {"x": [1, -Infinity]}}', "-Infinity is not valid JSON"),
    (b'{"input": {"x": 1e400}}', "too large for a 64-bit float"),
    (b'{"input": {"x": "\\ud800"}}', "lone surrogate \\ud800"),
    (b'{"input": {"x": "\xed\xa0\x80"}}', "not UTF-8"),
    (DEEP, "nesting deeper than 256 levels"),
])
@pytest.mark.parametrize("route", ["run", "runsync"])
def test_queue_refuses_what_is_not_strict_json(site: dict[str, str], route: str, body: bytes,
                                               named: str) -> None:
    status, answer = call("POST", f"{site['queue']}/{route}", body, auth(site))
    assert status == 400, answer
    assert "not valid JSON" in answer["error"] and named in answer["error"]
    if b"Infinity" in body or b"NaN" in body:
        assert "(at input.x" in answer["error"]  # where it is


def test_queue_keeps_working_after_bad_input(site: dict[str, str]) -> None:
    call("POST", f"{site['queue']}/run", b'{"input": {"x": NaN}}', auth(site))
    status, job = call("POST", f"{site['queue']}/runsync",
                       b'{"input": {"function": "add", "a": 2, "b": 3}}', auth(site))
    assert status == 200 and job["status"] == "COMPLETED" and job["output"] == 5, job


def test_a_non_finite_job_result_fails_that_job_clearly(site: dict[str, str]) -> None:
    status, job = call("POST", f"{site['queue']}/runsync", b'{"input": {"function": "ratio"}}',
                       auth(site))
    assert status == 200 and job["status"] == "FAILED", job
    assert "Infinity" in job["error"] and "not JSON-serializable" in job["error"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_submissions_must_declare_json(site: dict[str, str], content_type: str | None) -> None:
    body = b'{"input": {"function": "add", "a": 1, "b": 1}}'
    status, answer = call("POST", f"{site['queue']}/run", body, auth(site, content_type))
    assert status == 415, answer
    assert "Content-Type: application/json" in answer["error"]
    status, answer = call("POST", f"{site['queue']}/run", body,
                          auth(site, "Application/JSON; charset=utf-8"))
    assert status == 200 and answer["status"] == "IN_QUEUE", answer


def test_declared_oversize_is_refused_unread(site: dict[str, str]) -> None:
    status, answer = call("POST", f"{site['queue']}/run", b"{}",
                          {**auth(site), "Content-Length": str(RUN_LIMIT + 1)})
    assert status == 413 and "10 MB" in answer["error"] and "FLASH_MAX_RUN_MB" in answer["error"]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_chunked_oversize_is_refused_reading_no_more_than_the_limit(
    site: dict[str, str],
) -> None:
    pid = platform_status()["pid"]
    before = peak = rss(pid)
    parts = urllib.parse.urlsplit(site["queue"])
    head = (f"POST {parts.path}/run HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {site['token']}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    frame = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < UPLOAD_CHUNKS and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += 1
                peak = max(peak, rss(pid))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the platform answered and closed: it read no further
        answer = b""
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < UPLOAD_CHUNKS  # it stopped taking the body
    assert peak - before < 2 * RUN_LIMIT, f"platform RSS grew {(peak - before) >> 20} MiB"


@pytest.mark.parametrize("path", ["/api/v1/deployments/preview", "/api/v1/volumes",
                                  "/api/v1/apps", "/api/v1/endpoints/live",
                                  "/api/v1/deployments"])
def test_control_api_refuses_deep_and_non_strict_bodies(site: dict[str, str], path: str
                                                        ) -> None:
    for body, named in ((DEEP, "nesting deeper"), (b'{"name": NaN}', "NaN"),
                        (b'{"name": "\\udfff"}', "lone surrogate"),
                        (b"[1, 2]", "JSON object")):
        status, answer = call("POST", site["platform"] + path, body, auth(site))
        if path == "/api/v1/apps" and body == b"[1, 2]":
            assert status == 422, answer  # apps: 'the body needs a "name"'
            continue
        assert status == 400, (body[:20], answer)
        assert named in answer["error"], answer


@pytest.mark.parametrize("query", [
    "cursor=[1]", "cursor=%7B%22a.log%22%3A-1%7D", "cursor=%7B%22a.log%22%3Atrue%7D",
    "cursor=%7B%22a.log%22%3A1e400%7D", "cursor=nope", "cursor=" + "%5B" * 5000,
    "tail=-1", "tail=ten", "tail=1_0",
])
def test_logs_refuse_a_bad_cursor_or_tail(site: dict[str, str], query: str) -> None:
    endpoint_id = urllib.parse.urlsplit(site["api"]).path.rsplit("/", 1)[-1]
    status, answer = call("GET", f"{site['platform']}/api/v1/endpoints/{endpoint_id}/logs?"
                          f"{query}", headers=auth(site, None))
    assert status == 400, answer
    assert "cursor" in answer["error"] and "tail" in answer["error"]


def test_logs_tail_zero_is_no_lines_and_dot_dot_is_no_endpoint(site: dict[str, str]) -> None:
    endpoint_id = urllib.parse.urlsplit(site["api"]).path.rsplit("/", 1)[-1]
    base = f"{site['platform']}/api/v1/endpoints"
    wait_for(lambda: call("POST", site["api"] + "/echo", b'{"data": {}}',
                          {"Content-Type": "application/json"})[0] == 200, timeout=60)
    status, answer = call("GET", f"{base}/{endpoint_id}/logs?tail=0", headers=auth(site, None))
    assert (status, answer["lines"]) == (200, [])
    connection = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=10)
    connection.request("GET", "/api/v1/endpoints/../logs", headers=auth(site, None))
    assert connection.getresponse().status == 404
    connection.close()


def test_deployed_route_refuses_non_strict_bodies(site: dict[str, str]) -> None:
    url = site["api"] + "/echo"
    json_type = {"Content-Type": "application/json"}
    for body, named in ((b'{"data": {"x": NaN}}', "NaN is not valid JSON"),
                        (b'{"data": {"x": "\\ud800"}}', "lone surrogate"),
                        (b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                         "nesting deeper")):
        status, answer = wait_for(lambda b=body: (lambda r: r if r[0] != 503 else None)(
            call("POST", url, b, json_type)), timeout=60)
        assert status == 400, answer
        assert named in answer["error"], answer
    assert call("POST", url, b'{"data": {"x": 1.5}}', json_type) == (200, {"x": 1.5})


def test_deployed_route_answering_nan_is_a_clear_500(site: dict[str, str]) -> None:
    status, answer = wait_for(lambda: (lambda r: r if r[0] != 503 else None)(
        call("GET", site["api"] + "/average")), timeout=60)
    assert status == 500, answer
    assert answer["error_type"] == "InvalidJSON"
    assert "average" in answer["error"] and "NaN is not valid JSON" in answer["error"]
    assert "(at mean)" in answer["error"]


def test_deployed_docs_load_their_schema_under_the_endpoint_prefix(site: dict[str, str]
                                                                    ) -> None:
    prefix = urllib.parse.urlsplit(site["api"]).path
    status, page = wait_for(lambda: (lambda r: r if r[0] != 503 else None)(
        call("GET", site["api"] + "/docs")), timeout=60)
    assert status == 200 and f"'{prefix}/openapi.json'" in page, page[:500]
    status, schema = call("GET", site["platform"] + prefix + "/openapi.json")
    assert status == 200 and "/echo" in schema["paths"]
    assert schema["servers"] == [{"url": prefix}]  # "Try it out" goes through the gateway
