"""The limits, on a real platform and its worker, over raw sockets: slowloris, oversized
headers, bodies over the limit, foreign Host/Origin, /metrics, artifact bombs.

The abuse itself is `benchmarks/abuse.py`'s (the benchmark replays it at full size and prints
the figures); here it runs smaller, on a platform with short limits (header timeout 2 s,
8 MB bodies, 400 connections), and each outcome is asserted. Latency bounds are loose: a
busy test machine is not the benchmark's quiet one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import abuse  # benchmarks/abuse.py: the abuse cases

from runpod_flash import control
from runpod_flash.http import blocking

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 400
P99_BOUND_MS = 250.0  # the benchmark's target is 50 ms on a quiet machine
RSS_GROWTH_BOUND_MB = 16.0  # buffering even one body whole would take 8 MB per request


@pytest.fixture(scope="module")
def target() -> Iterator[abuse.Target]:
    with abuse.deployed({"FLASH_HEADER_TIMEOUT": str(HEADER_TIMEOUT_S),
                         "FLASH_MAX_BODY_MB": "8",
                         "FLASH_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}) as deployed:
        yield deployed


def served_well(result: abuse.Result) -> None:
    """The well-behaved client was answered throughout, quickly, and never with an error."""
    assert result.served > 20 and not result.client_failures, result
    assert result.p99_ms < P99_BOUND_MS, result


# -- slowloris --------------------------------------------------------------------------------


def test_slowloris_connections_are_closed_after_the_header_timeout_while_others_are_served(
        target: abuse.Target) -> None:
    result = abuse.replay(target, "slowloris",
                          lambda: abuse.slowloris(target, 500, HEADER_TIMEOUT_S))
    assert abuse.HELD not in result.statuses, f"connections held past the timeout: {result}"
    # past the connection limit the oldest waiting ones made room (closed, no answer)
    assert set(result.statuses) <= {408, 0} and result.statuses[0] >= 500 - MAX_CONNECTIONS
    served_well(result)


# -- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["platform", "worker"])
def test_an_oversized_header_is_431_at_once_while_others_are_served(
        target: abuse.Target, where: str) -> None:
    port = target.port if where == "platform" else target.worker_port()
    result = abuse.replay(target, "header", lambda: abuse.oversized_header(port, 64))
    assert result.statuses == {431: 1}, result
    served_well(result)


def test_a_header_within_the_limit_goes_through_to_the_worker(target: abuse.Target) -> None:
    status, body = abuse.call(target.port, "GET", f"{target.prefix}/hello", {
        "Authorization": f"Bearer {abuse.API_KEY}", "X-Large": "v" * 60_000})
    assert status == 200, body


# -- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_bodies_over_the_limit_are_413_and_memory_stays_flat(
        target: abuse.Target, chunked: bool) -> None:
    result = abuse.replay(target, "bodies",
                          lambda: abuse.big_bodies(target, chunked, count=10, megabytes=60))
    assert result.statuses == {413: 10}, result
    assert result.notes[0].endswith("took whole: 0"), "a cut-off body reached the worker whole"
    assert result.rss_growth_mb < RSS_GROWTH_BOUND_MB, result
    served_well(result)


def test_a_body_within_the_limit_is_served(target: abuse.Target) -> None:
    status, body = abuse.call(target.port, "POST", f"{target.prefix}/echo",
                              {"Authorization": f"Bearer {abuse.API_KEY}"}, b"x" * 7_000_000)
    assert (status, json.loads(body)) == (200, {"length": 7_000_000})


# -- who may call -----------------------------------------------------------------------------


def test_foreign_hosts_and_origins_are_refused_and_metrics_need_the_key(
        target: abuse.Target) -> None:
    statuses, _ = abuse.foreign_requests(target)
    assert statuses == [421, 421, 403, 401]
    status, body = abuse.call(target.port, "GET", "/ep/x/y", {"Host": "evil.example"})
    assert status == 421 and b"FLASH_ALLOWED_HOSTS=evil.example" in body
    for secret in (abuse.API_KEY, target.token):
        assert abuse.call(target.port, "GET", "/metrics",
                          {"Authorization": f"Bearer {secret}"})[0] == 200


def test_the_platform_s_own_clients_are_served(target: abuse.Target) -> None:
    url = f"http://127.0.0.1:{target.port}"
    curl = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
         f"Host: 127.0.0.1:{target.port}", "-H", f"Origin: {url}",
         "-H", f"Authorization: Bearer {abuse.API_KEY}", f"{url}{target.prefix}/hello"],
        capture_output=True, text=True, timeout=30)
    assert curl.stdout == "200"
    assert control.Platform(url, target.token).call("GET", "/api/v1/status")["pid"]
    status, _ = blocking.request("GET", f"{url}{target.prefix}/hello", b"",
                                 {"Authorization": f"Bearer {abuse.API_KEY}"}, 10)
    assert status == 200


# -- artifacts --------------------------------------------------------------------------------


@pytest.mark.parametrize("bomb", ["1.9 GiB of zeros", "500-deep path"])
def test_artifact_bombs_are_400(target: abuse.Target, bomb: str) -> None:
    result = abuse.replay(target, bomb, lambda: abuse.artifact_bomb(target, bomb))
    assert result.statuses == {400: 1}, result
    served_well(result)


def test_too_many_members_are_400(target: abuse.Target) -> None:
    data = abuse.tar_gz(iter([abuse.manifest(),
                              *(abuse.member(f"f/{n}") for n in range(20_001))]))
    assert abuse.upload(target, data) == 400


def test_a_handler_file_outside_the_artifact_is_400(target: abuse.Target) -> None:
    statuses, notes = abuse.handler_outside(target)
    assert statuses == [400], notes
