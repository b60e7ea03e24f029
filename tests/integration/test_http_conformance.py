"""HTTP/1.1 conformance of the gateway and deployed workers, driven over raw sockets.

Requests are written by hand (so malformed shapes can be sent); responses are read with
`h11` as the client-side parser. One platform (its own FLASH_HOME) and one deployment of
`projects/http_conformance` serve the whole module. Every wait is bounded. "Nothing in
flight" checks compare with what was in flight when the test began, so one test's leaked
request does not fail the next.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest

from helpers import flash, pid_alive, platform_status, stop_platform, wait_for

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).parent / "projects" / "http_conformance"
ENDPOINT = "conformance"
SLOW_ENDPOINT = "conformance-slow"  # executionTimeoutMs=1000
IO_TIMEOUT_S = 4.0  # one local, small answer; far more than it takes
BODY_LIMIT = 64 * 1024 * 1024  # the gateway's request body limit
BIG_CHUNKS = 1600  # /big streams this many 64 KiB chunks: 100 MiB
RSS_GROWTH_LIMIT = 30 * 1024 * 1024
UPLOAD_BYTES = 28 * 1024 * 1024  # under the worker's 30 MiB body limit
UPLOAD_RSS_GROWTH_LIMIT = 16 * 1024 * 1024  # buffering it whole would take 28 MiB or more
HOP_BY_HOP_RESPONSE = ("x-private", "keep-alive", "upgrade", "trailer")
IDLE_TIMEOUT_S = 3  # the platform's FLASH_GATEWAY_IDLE_TIMEOUT here: silence between chunks


# -- raw HTTP ---------------------------------------------------------------------------------


def http_request(method: str, target: str, headers: Sequence[tuple[str, str]] = (),
                 body: bytes | None = None) -> bytes:
    """Request bytes exactly as written: Host, `headers` in order, Content-Length for a body."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(*chunks: bytes) -> bytes:
    """A chunked body: each chunk framed, then the last-chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"


@dataclass
class Reply:
    """One final response, with the statuses of the interim (1xx) ones before it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    interim: list[int] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class Conn:
    """One client connection: bytes written by hand, responses parsed by h11."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT_S) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.parser = h11.Connection(h11.CLIENT)

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def announce(self, method: str) -> None:
        """Tell the parser a request with `method` went out (it frames a HEAD answer)."""
        parser = self.parser
        if parser.our_state is h11.DONE and parser.their_state is h11.DONE:
            parser.start_next_cycle()
        parser.send(h11.Request(method=method, target="/", headers=[("Host", "127.0.0.1")]))
        parser.send(h11.EndOfMessage())

    def send(self, data: bytes, method: str | None = None) -> None:
        """Write `data`; with `method`, it starts a request whose response is read next."""
        if method is not None:
            self.announce(method)
        self.sock.sendall(data)

    def event(self, timeout: float = IO_TIMEOUT_S) -> Any:
        """The next h11 event; TimeoutError when none completes within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.parser.next_event()
            if event is not h11.NEED_DATA:
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete HTTP event within {timeout}s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                raise TimeoutError(f"no complete HTTP event within {timeout}s") from None
            except ConnectionResetError:
                data = b""
            self.parser.receive_data(data)

    def head(self, timeout: float = IO_TIMEOUT_S) -> Reply:
        """Interim responses, then the final response's status and headers (no body yet)."""
        interim: list[int] = []
        while True:
            try:
                event = self.event(timeout)
            except TimeoutError:
                after = f" (after interim {interim})" if interim else ""
                raise TimeoutError(f"no final response within {timeout}s{after}") from None
            if isinstance(event, h11.InformationalResponse):
                interim.append(event.status_code)
            elif isinstance(event, h11.Response):
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers]
                return Reply(event.status_code, headers, interim=interim)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection without a response")
            else:
                raise AssertionError(f"unexpected {event!r} before a response")

    def data(self, timeout: float = IO_TIMEOUT_S) -> bytes | None:
        """The next piece of the response body; None at its end."""
        event = self.event(timeout)
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        raise AssertionError(f"unexpected {event!r} in a response body")

    def read_until(self, marker: bytes, timeout: float = IO_TIMEOUT_S) -> bytes:
        """Body bytes up to and including `marker` (all of them once the body ends)."""
        received = b""
        while marker not in received:
            piece = self.data(timeout)
            if piece is None:
                break
            received += piece
        return received

    def rest(self, timeout: float = IO_TIMEOUT_S) -> bytes:
        pieces = []
        while (piece := self.data(timeout)) is not None:
            pieces.append(piece)
        return b"".join(pieces)

    def response(self, timeout: float = IO_TIMEOUT_S) -> Reply:
        reply = self.head(timeout)
        reply.body = self.rest(timeout)
        return reply

    def exchange(self, data: bytes, method: str, timeout: float = IO_TIMEOUT_S) -> Reply:
        self.send(data, method)
        return self.response(timeout)

    def closed_by_server(self, timeout: float = IO_TIMEOUT_S) -> bool:
        """Whether the server closes this connection (EOF) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def echo_id(reply: Reply) -> str:
    assert reply.status == 200, (reply.status, reply.body[:300])
    return str(reply.json()["id"])


def seen_headers(reply: Reply) -> dict[str, list[str]]:
    """The request headers the worker saw, from an /echo answer."""
    seen: dict[str, list[str]] = {}
    for name, value in reply.json()["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# -- the deployment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where requests go: the gateway (prefix `/ep/{id}`), or a worker directly (no prefix)."""

    port: int
    prefix: str

    def url(self, route: str) -> str:
        return self.prefix + route


@dataclass
class Deployment:
    home: Path
    port: int  # the platform's: the gateway
    markers: Path  # files routes wait for or write

    def status(self) -> dict[str, Any]:
        return platform_status(self.home)

    def endpoint(self, name: str = ENDPOINT) -> dict[str, Any]:
        return next(e for e in self.status()["endpoints"] if e["name"] == name)

    def in_flight(self, name: str = ENDPOINT) -> int:
        return sum(worker["in_flight"] for worker in self.endpoint(name)["workers"])

    def settles(self, baseline: int, name: str = ENDPOINT, timeout: float = 10) -> None:
        """Wait until the endpoint has no more requests in flight than `baseline` (what was
        in flight before the test); fail after `timeout`."""
        try:
            wait_for(lambda: self.in_flight(name) <= baseline, timeout=timeout)
        except AssertionError:
            raise AssertionError(
                f"{self.in_flight(name)} requests still in flight on {name} after {timeout}s "
                f"(was {baseline} before)") from None

    def ready_worker(self, name: str = ENDPOINT, timeout: float = 30) -> dict[str, Any]:
        return wait_for(lambda: next((w for w in self.endpoint(name)["workers"]
                                      if w["state"] == "ready" and w["pid"]), None),
                        timeout=timeout)

    def platform_pid(self) -> int:
        return int(self.status()["pid"])

    def marker(self, name: str) -> str:
        """A fresh path a route waits for or writes to."""
        return str(self.markers / f"{name}-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The conformance project deployed on a platform of its own; always stopped after."""
    root = tmp_path_factory.mktemp("http-conformance")
    home, project, markers = root / "home", root / "project", root / "markers"
    home.mkdir()
    markers.mkdir()
    shutil.copytree(PROJECT, project)
    try:
        result = flash("deploy", str(project), "--json", timeout=120,
                       env={"FLASH_HOME": str(home), "FLASH_PLATFORM_PORT": "0",
                            "FLASH_GATEWAY_IDLE_TIMEOUT": str(IDLE_TIMEOUT_S)})
        assert result.returncode == 0, result.stderr
        url = json.loads(result.stdout)[0]["url"]
        deployment = Deployment(home, urllib.parse.urlsplit(url).port or 0, markers)
        for name in (ENDPOINT, SLOW_ENDPOINT):
            deployment.ready_worker(name)
        yield deployment
    finally:
        stop_platform(home)


@pytest.fixture
def gw(dep: Deployment) -> Target:
    return Target(dep.port, f"/ep/{ENDPOINT}")


def rss(pid: int) -> int:
    """Resident memory of `pid` in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RssPeak:
    """Samples a process's RSS every 10 ms in a thread, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.growth


# -- 1xx, HEAD, 204/304 -----------------------------------------------------------------------


def test_expect_100_continue_is_answered_once_and_not_forwarded(gw: Target) -> None:
    body = os.urandom(3000)
    with Conn(gw.port) as conn:
        conn.send(http_request("POST", gw.url("/echo?id=first"), [
            ("Content-Type", "application/octet-stream"), ("Expect", "100-continue"),
            ("Content-Length", str(len(body)))]), "POST")
        interim = conn.event()
        assert isinstance(interim, h11.InformationalResponse), interim
        assert interim.status_code == 100
        conn.send(body)
        reply = conn.response()
        assert reply.interim == [], f"more interim responses after the body: {reply.interim}"
        assert reply.status == 200, (reply.status, reply.body[:300])
        seen = reply.json()
        assert seen["length"] == len(body)
        assert seen["sha256"] == hashlib.sha256(body).hexdigest()
        assert "expect" not in seen_headers(reply), "Expect was forwarded to the worker"
        # The same socket: the next answer is this request's own, not a leftover.
        assert echo_id(conn.exchange(http_request("GET", gw.url("/echo?id=second")), "GET")) \
            == "second"


def test_expect_100_continue_over_the_body_limit_is_413_without_100(gw: Target) -> None:
    with Conn(gw.port) as conn:
        conn.send(http_request("POST", gw.url("/echo"), [
            ("Expect", "100-continue"), ("Content-Length", "100000000")]), "POST")
        first = conn.event()
        assert isinstance(first, h11.Response), f"{first!r} came before the final answer"
        assert first.status_code == 413


def test_interim_response_from_the_worker_is_never_taken_as_final(gw: Target) -> None:
    with Conn(gw.port) as conn:
        for n in range(3):
            reply = conn.exchange(http_request("GET", gw.url(f"/early?id=e{n}")), "GET")
            assert reply.status == 200 and reply.json() == {"id": f"e{n}"}, reply
            assert set(reply.interim) <= {103}
            assert echo_id(conn.exchange(http_request("GET", gw.url(f"/echo?id=x{n}")), "GET")) \
                == f"x{n}", "an answer meant for another request"


def test_head_has_no_body_and_the_connection_stays_usable(dep: Deployment, gw: Target) -> None:
    baseline = dep.in_flight()
    with Conn(gw.port) as conn:
        started = time.monotonic()
        head = conn.exchange(http_request("HEAD", gw.url("/echo?id=head")), "HEAD")
        assert time.monotonic() - started < 2
        assert head.body == b""
        # Body bytes after a HEAD answer would be parsed as the next response and break it.
        assert echo_id(conn.exchange(http_request("GET", gw.url("/echo?id=after")), "GET")) \
            == "after"
    dep.settles(baseline)
    assert head.status == 200, f"HEAD on a GET route answered {head.status}, not 200"


@pytest.mark.parametrize(("route", "status"), [("/nocontent", 204), ("/notmodified", 304)])
def test_bodiless_statuses_carry_no_body(gw: Target, route: str, status: int) -> None:
    with Conn(gw.port) as conn:
        for n in range(2):
            reply = conn.exchange(http_request("GET", gw.url(route)), "GET")
            assert (reply.status, reply.body) == (status, b"")
            # Any body bytes would break the parse of the next answer on this socket.
            assert echo_id(conn.exchange(http_request("GET", gw.url(f"/echo?id=n{n}")), "GET")) \
                == f"n{n}"


# -- headers ----------------------------------------------------------------------------------


def test_request_hop_by_hop_headers_are_not_forwarded(gw: Target) -> None:
    with Conn(gw.port) as conn:
        reply = conn.exchange(http_request("GET", gw.url("/echo?id=hop"), [
            ("Connection", "x-foo"), ("x-foo", "1"), ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Upgrade", "h2c"), ("x-end-to-end", "kept")]), "GET")
    seen = seen_headers(reply)
    assert seen.get("x-end-to-end") == ["kept"]
    for name in ("x-foo", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert name not in seen, f"the worker saw the hop-by-hop header {name}: {seen[name]}"
    assert not any("x-foo" in value for value in seen.get("connection", []))
    assert seen.get("via"), f"no Via header reached the worker: {sorted(seen)}"


def test_response_hop_by_hop_headers_are_not_forwarded(gw: Target) -> None:
    with Conn(gw.port) as conn:
        reply = conn.exchange(http_request("GET", gw.url("/hop")), "GET")
    assert (reply.status, reply.body) == (200, b"hop")
    assert reply.get("x-kept") == "yes"
    for name in HOP_BY_HOP_RESPONSE:
        assert not reply.all(name), f"the client got the hop-by-hop header {name}"
    assert not any("x-private" in value for value in reply.all("connection"))
    assert reply.all("via"), f"no Via header on the response: {reply.headers}"


def test_one_date_and_one_server_header(gw: Target) -> None:
    with Conn(gw.port) as conn:
        for route in ("/echo?id=d", "/hop", "/nocontent"):
            reply = conn.exchange(http_request("GET", gw.url(route)), "GET")
            assert len(reply.all("date")) == 1, (route, reply.headers)
            assert len(reply.all("server")) == 1, (route, reply.headers)


# -- framing ----------------------------------------------------------------------------------


SMUGGLING = {
    "content-length-and-transfer-encoding": (
        [("Content-Length", "5"), ("Transfer-Encoding", "chunked")], b"0\r\n\r\n"),
    "two-content-lengths": ([("Content-Length", "5"), ("Content-Length", "6")], b"hello!"),
    "bad-chunk-size": ([("Transfer-Encoding", "chunked")], b"zz\r\nhello\r\n0\r\n\r\n"),
}


def test_request_smuggling_shapes_are_refused(dep: Deployment, gw: Target) -> None:
    baseline = dep.in_flight()
    counters = {}
    for shape, (headers, body) in SMUGGLING.items():
        counters[shape] = dep.marker(shape)
        with Conn(gw.port) as conn:
            request = http_request("POST", gw.url(f"/count?file={q(counters[shape])}"), headers)
            reply = conn.exchange(request + body, "POST")
        assert reply.status == 400, (shape, reply.status, reply.body[:200])
    control = dep.marker("control")  # the counter does count a well-formed request
    with Conn(gw.port) as conn:
        reply = conn.exchange(http_request("POST", gw.url(f"/count?file={q(control)}"),
                                           body=b"hello"), "POST")
    assert reply.status == 200 and reply.json()["n"] == 1
    assert Path(control).read_text() == "done\n"
    dep.settles(baseline)  # anything forwarded has finished by now
    invoked = [shape for shape, path in counters.items() if os.path.exists(path)]
    assert not invoked, f"the worker ran requests the gateway should have refused: {invoked}"


def test_truncated_request_body_is_never_forwarded(dep: Deployment, gw: Target) -> None:
    truncated, complete = dep.marker("truncated"), dep.marker("complete")
    baseline = dep.in_flight()
    with Conn(gw.port) as conn:
        conn.send(http_request("POST", gw.url(f"/count?file={q(truncated)}"),
                               [("Content-Length", "1000")]) + b"a" * 500)
        conn.sock.shutdown(socket.SHUT_WR)
    with Conn(gw.port) as conn:
        reply = conn.exchange(http_request("POST", gw.url(f"/count?file={q(complete)}"),
                                           body=b"a" * 1000), "POST")
    assert reply.status == 200 and reply.json() == {"n": 1, "length": 1000}
    wait_for(lambda: os.path.exists(complete), timeout=10)
    dep.settles(baseline)  # whatever the gateway did with the truncated one, it is over
    assert not os.path.exists(truncated), "a truncated body reached the worker as a request"


def test_chunked_request_body_reaches_the_worker_whole(gw: Target) -> None:
    pieces = [b"a", os.urandom(1000), os.urandom(65536), b"tail!!!"]
    whole = b"".join(pieces)
    with Conn(gw.port) as conn:
        request = http_request("POST", gw.url("/echo?id=chunked"),
                               [("Transfer-Encoding", "chunked")])
        reply = conn.exchange(request + chunked(*pieces), "POST")
        assert echo_id(reply) == "chunked"
        assert (reply.json()["length"], reply.json()["sha256"]) == (
            len(whole), hashlib.sha256(whole).hexdigest())
        # and the connection is at a clean request boundary afterwards
        assert echo_id(conn.exchange(http_request("GET", gw.url("/echo?id=next")), "GET")) \
            == "next"


def test_chunked_request_body_over_the_limit_is_413(gw: Target) -> None:
    with Conn(gw.port, timeout=30) as conn:
        conn.send(http_request("POST", gw.url("/echo"), [("Transfer-Encoding", "chunked")]),
                  "POST")
        piece = chunked(b"x" * (1 << 20))[:-5]  # one framed 1 MiB chunk, no last-chunk

        def upload() -> None:
            with contextlib.suppress(OSError):  # the gateway may stop reading and close
                for _ in range(BODY_LIMIT // (1 << 20) + 4):
                    conn.sock.sendall(piece)
                conn.sock.sendall(b"0\r\n\r\n")

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        reply = conn.head(timeout=30)
        conn.close()
        uploader.join(timeout=10)
    assert reply.status == 413


def test_pipelined_requests_are_answered_in_order(gw: Target) -> None:
    with Conn(gw.port) as conn:
        conn.send(b"".join(http_request("GET", gw.url(f"/echo?id=pipe-{n}")) for n in range(3))
                  + http_request("POST", gw.url("/echo?id=pipe-post"), body=b"abc"))
        for expected, method in (("pipe-0", "GET"), ("pipe-1", "GET"), ("pipe-2", "GET"),
                                 ("pipe-post", "POST")):
            conn.announce(method)
            reply = conn.response()
            assert echo_id(reply) == expected
        assert reply.json()["length"] == 3


def test_the_connection_is_kept_alive_after_error_answers(gw: Target) -> None:
    """404, 405 and 422 answers leave the client's connection usable for the next request."""
    with Conn(gw.port) as conn:
        assert conn.exchange(http_request("GET", "/ep/no-such-endpoint/x"), "GET").status == 404
        assert conn.exchange(http_request("DELETE", gw.url("/echo")), "DELETE").status == 405
        assert conn.exchange(http_request("GET", gw.url("/nowhere")), "GET").status == 404
        assert echo_id(conn.exchange(http_request("GET", gw.url("/echo?id=ok")), "GET")) == "ok"


def test_connection_close_is_honoured(gw: Target) -> None:
    with Conn(gw.port) as conn:
        reply = conn.exchange(http_request("GET", gw.url("/echo?id=bye"),
                                           [("Connection", "close")]), "GET")
        assert echo_id(reply) == "bye"
        assert "close" in [v.strip().lower() for v in ",".join(reply.all("connection")).split(",")]
        assert conn.closed_by_server(), "the server kept the connection open"


def test_curl_upload_with_expect_100_continue(gw: Target, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    payload = json.dumps({"data": "x" * (2 * 1024 * 1024)}).encode()
    path = tmp_path / "payload.json"
    path.write_bytes(payload)
    result = subprocess.run(
        [curl, "-v", "-sS", "--max-time", "6", "--data-binary", f"@{path}",
         "-H", "Content-Type: application/json", "-w", "\n%{http_code}",
         f"http://127.0.0.1:{gw.port}{gw.url('/echo?id=curl')}"],
        capture_output=True, text=True, timeout=30,
    )
    assert "Expect: 100-continue" in result.stderr, "curl did not send Expect (test is moot)"
    assert result.returncode == 0, result.stderr.strip().splitlines()[-4:]
    body, _, code = result.stdout.rpartition("\n")
    assert code == "200", result.stdout[-500:]
    assert json.loads(body)["length"] == len(payload)


# -- streaming --------------------------------------------------------------------------------


def test_streamed_response_reaches_the_client_as_it_is_produced(dep: Deployment,
                                                                gw: Target) -> None:
    marker = dep.marker("stream")
    try:
        with Conn(gw.port) as conn:
            conn.send(http_request("GET", gw.url(f"/stream?marker={q(marker)}")), "GET")
            head = conn.head()
            assert head.status == 200
            first = conn.read_until(b"first\n")
            assert first == b"first\n", "the first chunk did not come before the last"
            Path(marker).touch()  # the worker now produces the last chunk
            assert first + conn.rest() == b"first\nlast\n"
    finally:
        Path(marker).touch()


def test_a_stream_that_goes_silent_is_cut_off_visibly(dep: Deployment, gw: Target) -> None:
    """Past the idle timeout between chunks the client's connection is closed without the
    last chunk (a truncated response never looks complete) and the slot is released."""
    marker = dep.marker("silent")
    baseline = dep.in_flight()
    try:
        with Conn(gw.port, timeout=IDLE_TIMEOUT_S * 4) as conn:
            conn.send(http_request("GET", gw.url(f"/stream?marker={q(marker)}")), "GET")
            assert conn.head().status == 200
            assert conn.read_until(b"first\n") == b"first\n"
            started = time.monotonic()
            with pytest.raises(h11.RemoteProtocolError):  # EOF before the last chunk
                conn.rest(timeout=IDLE_TIMEOUT_S * 4)
            assert time.monotonic() - started < IDLE_TIMEOUT_S * 3
        dep.settles(baseline)
    finally:
        Path(marker).touch()


def test_server_sent_events_arrive_one_by_one(dep: Deployment, gw: Target) -> None:
    marker = dep.marker("sse")
    try:
        with Conn(gw.port) as conn:
            conn.send(http_request("GET", gw.url(f"/sse?marker={q(marker)}"),
                                   [("Accept", "text/event-stream")]), "GET")
            head = conn.head()
            assert head.status == 200
            assert (head.get("content-type") or "").startswith("text/event-stream")
            for n in (1, 2):
                assert conn.read_until(b"\n\n") == f"data: {n}\n\n".encode()
                Path(f"{marker}.{n}").touch()  # lets the worker send event n + 1
            assert conn.rest() == b"data: 3\n\n"
    finally:
        for n in (1, 2):
            Path(f"{marker}.{n}").touch()


def test_100_mb_streamed_response_with_flat_gateway_memory(dep: Deployment,
                                                          gw: Target) -> None:
    sampler = RssPeak(dep.platform_pid())
    try:
        with Conn(gw.port, timeout=30) as conn:
            conn.send(http_request("GET", gw.url(f"/big?n={BIG_CHUNKS}")), "GET")
            assert conn.head(timeout=30).status == 200
            total = 0
            while (piece := conn.data(timeout=30)) is not None:
                total += len(piece)
    finally:
        growth = sampler.stop()
    assert total == BIG_CHUNKS * 65536
    assert growth < RSS_GROWTH_LIMIT, f"gateway RSS grew {growth / 2**20:.0f} MiB"


def test_large_request_body_is_streamed_with_flat_gateway_memory(dep: Deployment,
                                                                 gw: Target) -> None:
    body = os.urandom(UPLOAD_BYTES)
    sampler = RssPeak(dep.platform_pid())
    try:
        with Conn(gw.port, timeout=30) as conn:
            reply = conn.exchange(http_request("POST", gw.url("/echo?id=upload"), body=body),
                                  "POST", timeout=30)
    finally:
        growth = sampler.stop()
    assert echo_id(reply) == "upload"
    assert (reply.json()["length"], reply.json()["sha256"]) == (
        len(body), hashlib.sha256(body).hexdigest())
    assert growth < UPLOAD_RSS_GROWTH_LIMIT, f"gateway RSS grew {growth / 2**20:.0f} MiB"


def test_slow_reader_gets_backpressure_not_buffering(dep: Deployment, gw: Target) -> None:
    sampler = RssPeak(dep.platform_pid())
    try:
        with Conn(gw.port, timeout=30) as conn:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            conn.send(http_request("GET", gw.url(f"/big?n={BIG_CHUNKS}")), "GET")
            assert conn.head(timeout=30).status == 200
            total = 0
            while total < 1 << 20:
                piece = conn.data(timeout=30)
                assert piece is not None
                total += len(piece)
            pause_until = time.monotonic() + 2  # the reader stalls; the gateway must not buffer
            while time.monotonic() < pause_until and sampler.growth < RSS_GROWTH_LIMIT:
                time.sleep(0.02)
            stalled_growth = sampler.growth
            while (piece := conn.data(timeout=30)) is not None:
                total += len(piece)
    finally:
        sampler.stop()
    assert stalled_growth < RSS_GROWTH_LIMIT, (
        f"gateway RSS grew {stalled_growth / 2**20:.0f} MiB while the client did not read")
    assert total == BIG_CHUNKS * 65536


# -- aborts, timeouts, pooled connections -----------------------------------------------------


def test_client_abort_mid_response_cancels_the_worker(dep: Deployment, gw: Target) -> None:
    marker = dep.marker("endless")
    with Conn(gw.port) as conn:
        conn.send(http_request("GET", gw.url(f"/endless?marker={q(marker)}")), "GET")
        wait_for(lambda: os.path.exists(f"{marker}.started"), timeout=10)  # mid-response now
    try:
        wait_for(lambda: os.path.exists(marker), timeout=5)
    except AssertionError:
        raise AssertionError("the worker's stream went on after the client left") from None
    assert Path(marker).read_text() == "cancelled"
    with Conn(gw.port) as conn:
        assert echo_id(conn.exchange(http_request("GET", gw.url("/echo?id=later")), "GET")) \
            == "later"


def test_client_abort_mid_request_leaves_nothing_in_flight(dep: Deployment, gw: Target) -> None:
    baseline = dep.in_flight()
    with Conn(gw.port) as conn:
        conn.send(http_request("POST", gw.url("/echo?id=aborted"),
                               [("Content-Length", str(20 * 1024 * 1024))]))
        conn.send(os.urandom(1 << 20))
    dep.settles(baseline)
    with Conn(gw.port) as conn:
        assert echo_id(conn.exchange(http_request("GET", gw.url("/echo?id=healthy")), "GET")) \
            == "healthy"


def test_first_byte_timeout_is_504(dep: Deployment) -> None:
    baseline = dep.in_flight(SLOW_ENDPOINT)
    with Conn(dep.port, timeout=10) as conn:
        started = time.monotonic()
        reply = conn.exchange(http_request("GET", f"/ep/{SLOW_ENDPOINT}/slow"), "GET",
                              timeout=10)
        elapsed = time.monotonic() - started
    assert reply.status == 504, f"{reply.status} after {elapsed:.1f}s (execution timeout 1s)"
    assert elapsed < 3
    dep.settles(baseline, SLOW_ENDPOINT)


def test_killed_worker_under_a_pooled_connection_is_replaced(dep: Deployment,
                                                             gw: Target) -> None:
    with Conn(gw.port) as conn:
        for n in range(3):  # the gateway now holds a kept-alive connection to the worker
            reply = conn.exchange(http_request("GET", gw.url(f"/echo?id=pool{n}")), "GET")
            victim = reply.json()["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not pid_alive(victim), timeout=10)
    replacement = wait_for(lambda: next(
        (w for w in dep.endpoint()["workers"]
         if w["state"] == "ready" and w["pid"] and w["pid"] != victim), None), timeout=30)
    with Conn(gw.port) as conn:
        reply = conn.exchange(http_request("GET", gw.url("/echo?id=after-kill")), "GET")
    assert echo_id(reply) == "after-kill"
    assert reply.json()["pid"] == replacement["pid"]


def test_posts_over_reused_connections_never_kill_the_worker(gw: Target) -> None:
    """A healthy worker is never replaced because its pooled connections get reused."""
    pids = set()
    for n in range(20):
        with Conn(gw.port) as conn:
            reply = conn.exchange(http_request("POST", gw.url(f"/echo?id=p{n}"),
                                               body=b"{}"), "POST")
            assert echo_id(reply) == f"p{n}"
            pids.add(reply.json()["pid"])
    assert len(pids) == 1, f"POSTs were served by several workers in turn: {pids}"


def test_closed_connection_before_response_get_retried_on_same_worker(
    dep: Deployment, gw: Target
) -> None:
    """A reused connection that fails before any response byte: an idempotent request is
    retried on a new connection; the worker is not taken for dead."""
    counter = dep.marker("drop-get")
    with Conn(gw.port) as conn:
        pid = conn.exchange(http_request("GET", gw.url("/echo?id=warm")), "GET").json()["pid"]
        reply = conn.exchange(http_request("GET", gw.url(f"/drop?file={q(counter)}")), "GET",
                              timeout=30)
    assert reply.status == 200, (reply.status, reply.body[:300])
    assert reply.json()["n"] == 2, "not retried exactly once"
    assert reply.json()["pid"] == pid, "the worker was replaced over a dropped connection"
    assert pid_alive(pid)


def test_closed_connection_before_response_post_is_not_resent(dep: Deployment,
                                                             gw: Target) -> None:
    counter = dep.marker("drop-post")
    with Conn(gw.port) as conn:
        pid = conn.exchange(http_request("GET", gw.url("/echo?id=warm")), "GET").json()["pid"]
        reply = conn.exchange(http_request("POST", gw.url(f"/drop?file={q(counter)}"),
                                           body=b"{}"), "POST", timeout=30)
        assert reply.status == 502, (reply.status, reply.body[:300])
        assert Path(counter).read_text() == "done\n", "the POST was sent more than once"
        # keep-alive after an error: the client's connection carries the next request
        after = conn.exchange(http_request("GET", gw.url("/echo?id=after")), "GET", timeout=30)
    assert after.json()["pid"] == pid and pid_alive(pid), \
        "a dropped connection got a healthy worker killed"


# -- many clients -----------------------------------------------------------------------------


def test_concurrent_clients_with_random_aborts_get_their_own_answers(
    dep: Deployment, gw: Target
) -> None:
    baseline = dep.in_flight()
    failures: list[str] = []
    completed = [0] * 40

    def client(number: int) -> None:
        rng = random.Random(number)
        conn = Conn(gw.port, timeout=15)
        try:
            for n in range(25):
                rid = f"c{number}-{n}-{uuid.uuid4().hex[:6]}"
                roll = rng.random()
                if roll < 0.1:  # abort mid-request
                    conn.send(http_request("POST", gw.url(f"/echo?id={rid}"),
                                           [("Content-Length", "100000")]) + b"a" * 1000)
                    conn.close()
                    conn = Conn(gw.port, timeout=15)
                elif roll < 0.2:  # abort mid-response
                    conn.send(http_request("GET", gw.url(f"/big?n=16&id={rid}")))
                    conn.sock.recv(1024)
                    conn.close()
                    conn = Conn(gw.port, timeout=15)
                elif roll < 0.6:
                    body = rid.encode() * rng.randint(1, 200)
                    reply = conn.exchange(http_request("POST", gw.url(f"/echo?id={rid}"),
                                                       body=body), "POST", timeout=15)
                    got = (echo_id(reply), reply.json()["sha256"])
                    if got != (rid, hashlib.sha256(body).hexdigest()):
                        failures.append(f"POST {rid} answered as {got[0]}")
                    completed[number] += 1
                else:
                    reply = conn.exchange(http_request("GET", gw.url(f"/echo?id={rid}")), "GET",
                                          timeout=15)
                    if echo_id(reply) != rid:
                        failures.append(f"GET {rid} answered as {echo_id(reply)}")
                    completed[number] += 1
        except Exception as exc:
            failures.append(f"client {number}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "clients still running after 60s"
    assert not failures, failures[:5]
    assert sum(completed) > 600
    dep.settles(baseline)
    with Conn(gw.port) as conn:
        assert echo_id(conn.exchange(http_request("GET", gw.url("/echo?id=end")), "GET")) \
            == "end"
