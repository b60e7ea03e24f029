"""Abuse, replayed against a real platform: does it stay up, small and responsive?

Deploys a one-worker project on a platform of its own (FLASH_MAX_BODY_MB=30, so the bodies
below are over the limit; FLASH_MAX_CONNECTIONS=2000, so the slowloris also goes past the
connection limit; other limits at their defaults unless given), then replays each case while
a well-behaved client keeps calling `GET /hello` through the gateway on one kept-alive
connection:

- slowloris: `--slowloris` connections (3000) that send half a request head and wait;
- oversized headers: one 128 MiB header, then one of 512 MiB;
- bodies: 10 concurrent 60 MB POSTs with a Content-Length, then 10 chunked ones;
- artifact bombs: 200,000 members, 1.9 GiB of zeros in a ~2 MB upload, a 500-deep path, a
  manifest whose handler_file is `../../../../tmp/x.py`;
- foreign Host and Origin headers, and /metrics without the API key.

Prints, per case: the statuses the abuse got, 5xx answers (target 0), the platform's RSS peak
(target < 200 MB), and the well-behaved client's p50/p99 (target p99 < 50 ms). FAIL does not
change the exit status; a broken setup does.

    python benchmarks/abuse.py [--slowloris 3000] [--header-timeout 10]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import http.client
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from timing import percentiles

PROJECT = textwrap.dedent("""
    from starlette.requests import Request

    from runpod_flash import CpuLoadBalancerSlsResource, remote

    api = CpuLoadBalancerSlsResource(name="abuse", workersMin=1, workersMax=1)
    POSTS = {"complete": 0}

    @remote(api, method="GET", path="/hello")
    async def hello():
        return {"hello": "world"}

    @remote(api, method="GET", path="/posts")
    async def posts():
        return POSTS

    @remote(api, method="POST", path="/echo")
    async def echo(request: Request):
        body = await request.body()
        POSTS["complete"] += 1
        return {"length": len(body)}
""")
API_KEY = "abuse-key"
IO_TIMEOUT_S = 30.0
ZEROS = bytes(1 << 20)
ZEROS_GZ = gzip.compress(ZEROS, 9, mtime=0)
TARGETS = {"5xx": 0, "rss_mb": 200.0, "p99_ms": 50.0}


class BenchError(RuntimeError):
    """The setup is broken, so the numbers would mean nothing."""


# -- the platform -----------------------------------------------------------------------------


@dataclass
class Target:
    """A platform with the project deployed: where to send what."""

    home: Path
    port: int
    prefix: str  # the endpoint's gateway path, `/ep/<id>`
    token: str
    env: dict[str, str]

    @property
    def auth(self) -> str:
        return f"Authorization: Bearer {API_KEY}"

    def status(self) -> dict:
        return json.loads(call(self.port, "GET", "/api/v1/status",
                               {"Authorization": f"Bearer {self.token}"})[1])

    def platform_pid(self) -> int:
        return int(self.status()["pid"])

    def worker_port(self) -> int:
        endpoint = next(e for e in self.status()["endpoints"] if e["name"] == "abuse")
        return int(next(w["port"] for w in endpoint["workers"] if w["state"] == "ready"))


@contextlib.contextmanager
def deployed(env: dict[str, str]) -> Iterator[Target]:
    """The project deployed on a new platform with `env`; the platform is stopped after."""
    home = Path(tempfile.mkdtemp(prefix="flash-abuse-"))
    project = Path(tempfile.mkdtemp(prefix="flash-abuse-project-"))
    (project / "service.py").write_text(PROJECT)
    full_env = {**os.environ, "FLASH_HOME": str(home), "FLASH_PLATFORM_PORT": "0",
                "FLASH_API_KEY": API_KEY, **env}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "runpod_flash.cli", "deploy", str(project), "--json"],
            env=full_env, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            raise BenchError(f"deploy failed: {result.stderr[-2000:]}")
        url = json.loads(result.stdout)[0]["url"]
        port = int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        target = Target(home, port, "/" + url.split("://", 1)[1].split("/", 1)[1],
                        (home / "token").read_text().strip(), full_env)
        deadline = time.monotonic() + 60
        while call(port, "GET", f"{target.prefix}/hello",
                   {"Authorization": f"Bearer {API_KEY}"})[0] != 200:
            if time.monotonic() > deadline:
                raise BenchError("the deployed endpoint never answered 200")
            time.sleep(0.2)
        yield target
    finally:
        subprocess.run([sys.executable, "-m", "runpod_flash.cli", "platform", "stop"],
                       env=full_env, capture_output=True, timeout=60)


# -- HTTP over raw sockets --------------------------------------------------------------------


def call(port: int, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> tuple[int, bytes]:
    """One well-formed request (http.client); (status, body), status 0 when none came."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT_S)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


HELD = -1  # read_status: the connection is still open, with no answer, at the timeout


def read_status(sock: socket.socket, timeout: float = IO_TIMEOUT_S) -> int:
    """The status of the response arriving on `sock`: 0 when it was closed (or reset)
    without one, HELD when it is still open with none after `timeout` seconds."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    except TimeoutError:
        return HELD
    except OSError:
        pass
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else 0


def head(method: str, path: str, *lines: str) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
            "".join(f"{line}\r\n" for line in lines) + "\r\n").encode("latin-1")


def send_and_read(port: int, data: Callable[[socket.socket], None]) -> tuple[int, float]:
    """Write with `data(sock)` in a thread while reading the answer: (status, seconds to it).
    The writer may be cut off once the server has answered and closed; that is the point."""
    sock = socket.create_connection(("127.0.0.1", port))
    started = time.perf_counter()

    def write() -> None:
        with contextlib.suppress(OSError):
            data(sock)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    status = read_status(sock)
    elapsed = time.perf_counter() - started
    sock.close()
    writer.join(timeout=IO_TIMEOUT_S)
    return status, elapsed


# -- measuring --------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for {pid}")


class Watch:
    """While a case runs: the platform's RSS peak (every 10 ms) and a well-behaved client's
    latencies (`GET /hello` on one kept-alive connection, back to back)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.pid = target.platform_pid()
        self.baseline = self.peak = rss_mb(self.pid)
        self.latencies: list[float] = []
        self.failures: Counter[int] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, daemon=True),
                         threading.Thread(target=self._client, daemon=True)]

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=IO_TIMEOUT_S)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss_mb(self.pid))

    def _client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.target.port, timeout=5)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                connection.request("GET", f"{self.target.prefix}/hello", headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = 0
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.target.port,
                                                        timeout=5)
            if status == 200:
                self.latencies.append((time.perf_counter() - started) * 1000)
            else:
                self.failures[status] += 1
            time.sleep(0.002)
        connection.close()


@dataclass
class Result:
    case: str
    statuses: Counter[int]
    rss_peak_mb: float
    rss_growth_mb: float
    p50_ms: float
    p99_ms: float
    served: int
    client_failures: Counter[int]
    notes: list[str] = field(default_factory=list)

    @property
    def five_xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500) + \
            sum(n for status, n in self.client_failures.items() if status >= 500)


Case = Callable[[], tuple[list[int], list[str]]]  # the statuses the abuse got, and notes


def replay(target: Target, name: str, case: Case) -> Result:
    """Run `case` while watching the platform and a well-behaved client."""
    with Watch(target) as watch:
        time.sleep(0.2)  # the client's baseline
        statuses, notes = case()
        time.sleep(0.2)
    p50, p99 = percentiles(watch.latencies) if watch.latencies else (float("nan"),) * 2
    return Result(name, Counter(statuses), watch.peak, watch.peak - watch.baseline, p50, p99,
                  len(watch.latencies), watch.failures, notes)


# -- the cases --------------------------------------------------------------------------------


def slowloris(target: Target, count: int, header_timeout: float) -> tuple[list[int], list[str]]:
    """`count` connections that send half a head; how many the platform closed, and when."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", target.port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sockets.append(sock)
    opened = time.monotonic()
    statuses = []
    for sock in sockets:
        statuses.append(read_status(sock, timeout=max(0.1, opened + header_timeout + 3
                                                       - time.monotonic())))
        sock.close()
    return statuses, [f"{count - statuses.count(HELD)} of {count} closed within "
                      f"{time.monotonic() - opened:.1f}s ({statuses.count(0)} without an "
                      "answer: evicted past the connection limit)"]


def oversized_header(port: int, mib: int) -> tuple[list[int], list[str]]:
    """One header of `mib` MiB sent to `port` (the platform's, or a worker's)."""
    chunk = b"a" * (1 << 20)

    def write(sock: socket.socket) -> None:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        for _ in range(mib):
            sock.sendall(chunk)

    status, seconds = send_and_read(port, write)
    return [status], [f"{mib} MiB header answered in {seconds * 1000:.0f} ms"]


def big_bodies(target: Target, chunked: bool, count: int = 10,
               megabytes: int = 60) -> tuple[list[int], list[str]]:
    size = megabytes * 1000 * 1000
    piece = b"x" * (1 << 20)
    before = json.loads(call(target.port, "GET", f"{target.prefix}/posts",
                             {"Authorization": f"Bearer {API_KEY}"})[1])["complete"]

    def write(sock: socket.socket) -> None:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        sock.sendall(head("POST", f"{target.prefix}/echo", target.auth, framing))
        for start in range(0, size, len(piece)):
            data = piece[:min(len(piece), size - start)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            sock.sendall(b"0\r\n\r\n")

    results: list[tuple[int, float]] = []
    threads = [threading.Thread(target=lambda: results.append(send_and_read(target.port, write)))
               for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=IO_TIMEOUT_S * 2)
    after = json.loads(call(target.port, "GET", f"{target.prefix}/posts",
                            {"Authorization": f"Bearer {API_KEY}"})[1])["complete"]
    slowest = max(seconds for _, seconds in results) * 1000
    return [status for status, _ in results], [
        f"slowest answer {slowest:.0f} ms; bodies the worker took whole: {after - before}"]


def tar_gz(members: Iterator[tuple[tarfile.TarInfo, Iterator[bytes]]]) -> bytes:
    """A .tar.gz written piece by piece. Each megabyte of zeros is one gzip member,
    compressed once and repeated (gzip readers take concatenated members as one stream), so
    gigabytes of zeros take no time to make."""
    out = io.BytesIO()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    for info, data in members:
        out.write(compressor.compress(info.tobuf(tarfile.GNU_FORMAT)))
        for piece in data:
            if piece is ZEROS:
                out.write(compressor.flush())
                out.write(ZEROS_GZ)
                compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
            else:
                out.write(compressor.compress(piece))
        out.write(compressor.compress(bytes(-info.size % tarfile.BLOCKSIZE)))
    out.write(compressor.compress(bytes(2 * tarfile.BLOCKSIZE)))
    out.write(compressor.flush())
    return out.getvalue()


def member(name: str, size: int = 0, data: bytes | None = None
           ) -> tuple[tarfile.TarInfo, Iterator[bytes]]:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else size
    pieces = iter([data]) if data is not None else \
        (ZEROS if size - at >= len(ZEROS) else bytes(size - at)
         for at in range(0, size, len(ZEROS)))
    return info, pieces


def manifest(handler_file: str | None = None) -> tuple[tarfile.TarInfo, Iterator[bytes]]:
    resource = {"spec": {"type": "QB"}, **({"handler_file": handler_file} if handler_file
                                            else {})}
    return member("flash_manifest.json",
                  data=json.dumps({"resources": {"bomb": resource}}).encode())


BOMBS: dict[str, Callable[[], bytes]] = {
    "200,000 members": lambda: tar_gz(itertools.chain(
        [manifest()], (member(f"f/{n}") for n in range(200_000)))),
    "1.9 GiB of zeros": lambda: tar_gz(iter([manifest(), member("zeros", size=1900 * 1024**2)])),
    "500-deep path": lambda: tar_gz(iter([manifest(), member("d/" * 500 + "x.py", data=b"")])),
}


def upload(target: Target, data: bytes) -> int:
    return call(target.port, "PUT", f"/api/v1/artifacts/{hashlib.sha256(data).hexdigest()}",
                {"Authorization": f"Bearer {target.token}"}, data)[0]


def artifact_bomb(target: Target, name: str) -> tuple[list[int], list[str]]:
    data = BOMBS[name]()
    started = time.perf_counter()
    status = upload(target, data)
    return [status], [f"{len(data) / 1024**2:.1f} MB upload answered in "
                      f"{(time.perf_counter() - started) * 1000:.0f} ms"]


def handler_outside(target: Target) -> tuple[list[int], list[str]]:
    data = tar_gz(iter([manifest("../../../../tmp/x.py")]))
    uploaded = upload(target, data)
    status = call(target.port, "POST", "/api/v1/deployments",
                  {"Authorization": f"Bearer {target.token}"},
                  json.dumps({"artifact": hashlib.sha256(data).hexdigest(),
                              "python": sys.executable}).encode())[0]
    return [status], [f"upload {uploaded}, deployment {status}"]


def foreign_requests(target: Target) -> tuple[list[int], list[str]]:
    key = {"Authorization": f"Bearer {API_KEY}"}
    return [
        call(target.port, "GET", f"{target.prefix}/hello", {**key, "Host": "evil.example"})[0],
        call(target.port, "GET", "/api/v1/status", {"Host": f"evil.example:{target.port}"})[0],
        call(target.port, "GET", f"{target.prefix}/hello",
             {**key, "Origin": "http://evil.example"})[0],
        call(target.port, "GET", "/metrics")[0],
    ], ["foreign Host, foreign Host, foreign Origin, /metrics without a key"]


# -- the run ----------------------------------------------------------------------------------


def report(results: list[Result]) -> None:
    print(f"{'case':<34} {'statuses':<22} {'5xx':>4} {'RSS peak':>9} {'growth':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'served':>6}")
    for r in results:
        statuses = ",".join(f"{status}x{n}" for status, n in sorted(r.statuses.items()))
        print(f"{r.case:<34} {statuses:<22} {r.five_xx:>4} {r.rss_peak_mb:>7.0f}MB "
              f"{r.rss_growth_mb:>5.0f}MB {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} {r.served:>6}")
        for note in r.notes:
            print(f"    {note}")
        if r.client_failures:
            print(f"    well-behaved client failures: {dict(r.client_failures)}")
    five_xx = sum(r.five_xx for r in results)
    rss = max(r.rss_peak_mb for r in results)
    p99 = max(r.p99_ms for r in results if r.case.startswith(("slowloris", "header")))
    for ok, line in [
        (five_xx <= TARGETS["5xx"], f"5xx answers: {five_xx} (target 0)"),
        (rss < TARGETS["rss_mb"], f"platform RSS peak {rss:.0f} MB (target < 200 MB)"),
        (p99 < TARGETS["p99_ms"], f"well-behaved p99 during slowloris and oversized headers "
                                  f"{p99:.1f} ms (target < 50 ms)"),
    ]:
        print(f"  [{'PASS' if ok else 'FAIL'}] {line}")


def run(slow_count: int, header_timeout: float) -> list[Result]:
    env = {"FLASH_MAX_BODY_MB": "30", "FLASH_MAX_CONNECTIONS": "2000",
           "FLASH_HEADER_TIMEOUT": f"{header_timeout:g}"}
    results = []
    with deployed(env) as target:
        cases: list[tuple[str, Case]] = [
            (f"slowloris x{slow_count}", lambda: slowloris(target, slow_count, header_timeout)),
            ("header 128 MiB", lambda: oversized_header(target.port, 128)),
            ("header 512 MiB", lambda: oversized_header(target.port, 512)),
            ("header 128 MiB, to a worker", lambda: oversized_header(target.worker_port(), 128)),
            ("10 x 60 MB POST (Content-Length)", lambda: big_bodies(target, chunked=False)),
            ("10 x 60 MB POST (chunked)", lambda: big_bodies(target, chunked=True)),
            *((f"artifact: {name}", lambda name=name: artifact_bomb(target, name))
              for name in BOMBS),
            ("artifact: handler_file outside", lambda: handler_outside(target)),
            ("foreign Host/Origin, /metrics", lambda: foreign_requests(target)),
        ]
        for name, case in cases:
            results.append(replay(target, name, case))
            print(f"done: {name}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowloris", type=int, default=3000, help="idle connections")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="the platform's FLASH_HEADER_TIMEOUT for the run")
    options = parser.parse_args()
    try:
        report(run(options.slowloris, options.header_timeout))
    except BenchError as exc:
        sys.exit(f"broken: {exc}")


if __name__ == "__main__":
    main()
