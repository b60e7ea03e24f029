"""Fuzzing the queue API and the control API of a real platform over raw HTTP: whatever the
method, path, query, headers and body, the answer is never a 5xx.

The platform is this module's own (its own FLASH_HOME), with one queue endpoint deployed, so
what the fuzzer creates or deletes touches no other test. Left out, because they do what
they are asked rather than fail: `/api/v1/shutdown`, deleting the deployed endpoint, complete
live-endpoint specs (they build environments), and the workers' long polls with the platform
token (job-take and job-stop wait 20 s for work).
"""

from __future__ import annotations

import http.client
import json
import shutil
import textwrap
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import flash, platform_in, stop_platform

ENDPOINT = "fuzz-queue"
SERVICE = textwrap.dedent(f"""
    from runpod_flash import CpuServerlessEndpoint, remote

    queue = CpuServerlessEndpoint(name="{ENDPOINT}", workersMax=1)


    @remote(queue)
    def echo(value=None):
        return value
""")
EXAMPLES = 800  # per API: under 10 s each here, inside CI's minute together
QUEUE_ROUTES = [  # (method, route under /v2/{endpoint}/)
    ("POST", "run"), ("POST", "runsync"), ("GET", "status/{job}"), ("POST", "stream/{job}"),
    ("POST", "cancel/{job}"), ("POST", "retry/{job}"), ("POST", "purge-queue"),
    ("GET", "health"), ("POST", "job-done/{worker}/{job}"),
    ("POST", "job-stream/{worker}/{job}"), ("GET", "ping/{worker}"),
    ("GET", "job-take/{worker}"), ("GET", "job-take-batch/{worker}"),
    ("GET", "job-stop/{worker}"),
]
LONG_POLLS = ("job-take", "job-take-batch", "job-stop")
CONTROL_ROUTES = [
    ("GET", "/health"), ("GET", "/api/v1/status"), ("POST", "/api/v1/endpoints/live"),
    ("GET", "/api/v1/endpoints/{endpoint}/logs"), ("PUT", "/api/v1/artifacts/{name}"),
    ("POST", "/api/v1/deployments"), ("POST", "/api/v1/deployments/preview"),
    ("GET", "/api/v1/deployments/{name}"), ("GET", "/api/v1/volumes"),
    ("POST", "/api/v1/volumes"), ("DELETE", "/api/v1/volumes/{name}"),
    ("GET", "/api/v1/apps"), ("POST", "/api/v1/apps"), ("GET", "/api/v1/apps/{name}"),
    ("DELETE", "/api/v1/apps/{name}"), ("GET", "/api/v1/apps/{name}/environments"),
    ("POST", "/api/v1/apps/{name}/environments"),
    ("GET", "/api/v1/apps/{name}/environments/{name}"),
    ("DELETE", "/api/v1/apps/{name}/environments/{name}"),
    ("POST", "/internal/workers/{worker}/ready"),
]
KNOWN_KEYS = [  # what the handlers look for; a complete live spec is never drawn
    "input", "policy", "webhook", "affinity", "executionTimeout", "ttl", "output", "error",
    "status", "name", "size", "artifact", "python", "resources", "app", "environment",
    "manifest", "port", "type", "idleTimeout",
]
NASTY_BODIES = [
    b"", b"null", b"[]", b"{}", b'{"input": NaN}', b'{"input": "\\ud800"}', b'{"input": 1e999}',
    b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b"[" * 50_000, b"\xff\xfe",
    b'{"input": {"x": 1}, "policy": {"ttl": -1}}', b'{"input": 1, "webhook": "file:///etc"}',
    b'{"input": 1, "policy": []}', b'{"name": {"a": 1}}', b'{"name": ".."}', b'{"port": "x"}',
    b'{"artifact": "../../x", "python": "p"}', b'{"manifest": {"resources": 5}}',
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

text = st.text(max_size=24)
scalars = (st.none() | st.booleans() | st.integers() | text
           | st.floats(allow_nan=False, allow_infinity=False))
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(  # jobs first: hypothesis leans to the first choices
    st.builds(lambda job_input, extra: json.dumps({**extra, "input": job_input}).encode(),
              json_values, st.dictionaries(keys, json_values, max_size=2)),
    st.dictionaries(keys, json_values, max_size=5).map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.sampled_from(NASTY_BODIES),
    st.binary(max_size=64),
    st.none(),
)
segments = st.one_of(st.sampled_from(["", ".", "..", "%", "a b", "\u00e9", "x" * 300]), text)
queries = st.dictionaries(
    st.sampled_from(["wait", "batch_size", "job_id", "cursor", "tail", "worker", "force"]) | text,
    st.sampled_from(["-1", "0", "1e9", "[1]", '{"a.log": -1}', "999999999999999999999"]) | text,
    max_size=3,
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def mostly(usual: Any, others: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` four times in five, so most requests get past routing and auth."""
    return st.integers(0, 4).flatmap(lambda n: others if n == 0 else st.just(usual))


@st.composite
def requests(draw: st.DrawFn, routes: list[tuple[str, str]], prefix: str, real: dict[str, str],
             token: str) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, target, headers, body): a route with each placeholder a real value or junk."""
    method, route = draw(st.sampled_from(routes))
    method = draw(mostly(method, st.sampled_from(METHODS)))
    values = {name: draw(mostly(value, segments)) for name, value in real.items()}
    path = (prefix + route).format(**{name: urllib.parse.quote(value, safe="")
                                      for name, value in values.items()})
    query = urllib.parse.urlencode(draw(queries))
    headers = {}
    authorization = draw(mostly(f"Bearer {token}", st.sampled_from([token, "", "Bearer nope"])
                                | header_text))
    if route.split("/")[0] in LONG_POLLS and token in authorization:
        authorization = "Bearer nope"
    if authorization:
        headers["Authorization"] = authorization
    content_type = draw(mostly("application/json", st.sampled_from(
        ["application/json; charset=utf-8", "text/plain", ""]) | header_text))
    if content_type:
        headers["Content-Type"] = content_type
    return method, path + (f"?{query}" if query else ""), headers, draw(bodies)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """This module's platform with the queue endpoint deployed; stopped after."""
    root = tmp_path_factory.mktemp("fuzz")
    home, project = root / "home", root / "fuzz_app"
    home.mkdir()
    project.mkdir()
    (project / "service.py").write_text(SERVICE)
    env = {"FLASH_HOME": str(home), "FLASH_PLATFORM_PORT": "0"}
    try:
        result = flash("deploy", str(project), "--json", env=env)
        assert result.returncode == 0, result.stderr
        found = platform_in(home)
        assert found is not None
        parts = urllib.parse.urlsplit(found.url)
        yield {"host": parts.hostname, "port": parts.port, "token": found.token}
    finally:
        stop_platform(home)
        shutil.rmtree(root, ignore_errors=True)


def send(platform: dict[str, Any], method: str, target: str, headers: dict[str, str],
         body: bytes | None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(platform["host"], platform["port"], timeout=60)
    try:
        connection.request(method, target, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def fuzz(platform: dict[str, Any], routes: list[tuple[str, str]], prefix: str,
         real: dict[str, str]) -> None:
    @FUZZ
    @given(requests(routes, prefix, real, platform["token"]))
    def no_server_error(request: tuple[str, str, dict[str, str], bytes | None]) -> None:
        method, target, headers, body = request
        status, answer = send(platform, method, target, headers, body)
        assert status < 500, (method, target, headers, body and body[:200], answer[:500])

    no_server_error()


def test_queue_api_never_answers_5xx(platform: dict[str, Any]) -> None:
    fuzz(platform, QUEUE_ROUTES, "/v2/{endpoint}/",
         {"endpoint": ENDPOINT, "job": "sync-0", "worker": "w-0"})


def test_control_api_never_answers_5xx(platform: dict[str, Any]) -> None:
    fuzz(platform, CONTROL_ROUTES, "", {"endpoint": ENDPOINT, "name": "default",
                                        "worker": "w-0"})
    # the deployed endpoint itself, read but never deleted
    status, _ = send(platform, "GET", f"/api/v1/endpoints/{ENDPOINT}",
                     {"Authorization": f"Bearer {platform['token']}"}, None)
    assert status == 200
