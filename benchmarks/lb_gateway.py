"""Gateway hop: the same two deployed workers directly, through nginx, and through the gateway.

Deploys a two-route project (`GET /hello`, and `GET /stream`, which yields a first chunk at
once and more after 0.2 s) with two warm workers, starts nginx as a reference reverse proxy
in front of the same two workers, and drives `GET /hello` with `wrk`, an independent load
generator, so the client's cost is the same for every target and not the project's own code.

Targets per concurrency (1 and 32), interleaved over `--rounds` rounds, median reported:

- direct: at concurrency 1, one wrk (-t1 -c1) on one worker's port: with one request in
  flight a proxy also uses one worker at a time. At concurrency 32, two wrk processes at
  once (-t1 -c16 each), one per worker port: req/s is their sum, p50 the mean of their p50s.
  So direct, like nginx and the gateway, spreads over both workers with the same two
  load-generator threads.
- nginx: one wrk (-t1 -c1, or -t2 -c32) on nginx, which round-robins over both workers
  with keep-alive upstream connections.
- gateway: the same on the platform's URL for the endpoint.

Every request carries the platform token as `Authorization: Bearer`, so all targets see
the same bytes. Beside req/s and p50, each proxy's own CPU time per request (from /proc,
over the same wrk run) is reported: on a shared machine it moves less than throughput.
Then it measures the time to the first body byte of `/stream` through each target (a raw
socket, median of 10), and prints the ratios and PASS/FAIL against the targets.
FAIL does not change the exit status; a broken setup (no wrk/nginx, non-200 answers) does.

    python benchmarks/lb_gateway.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runpod_flash.control import Platform

PROJECT = textwrap.dedent("""
    import asyncio

    from starlette.responses import StreamingResponse

    from runpod_flash import CpuLoadBalancerSlsResource, remote

    api = CpuLoadBalancerSlsResource(name="bench-lb", workersMin=2, workersMax=2)

    @remote(api, method="GET", path="/hello")
    async def hello():
        return {"hello": "world"}

    @remote(api, method="GET", path="/stream")
    async def stream():
        async def chunks():
            yield b"first\\n"
            await asyncio.sleep(0.2)
            for _ in range(3):
                yield b"more\\n"
        return StreamingResponse(chunks(), media_type="text/plain")
""")

# proxy_buffering is off globally: the gateway is a pass-through proxy that should stream
# every response as it arrives, so the reference does too. For the small /hello answer it
# makes no measurable difference (nginx forwards what it has read either way), and one
# location keeps both routes on the same, comparable path.
NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream workers {{
        server 127.0.0.1:{port_a};
        server 127.0.0.1:{port_b};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://workers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header {secret_header} {secret};
            proxy_buffering off;
        }}
    }}
}}
"""

CONCURRENCIES = (1, 32)
TARGET_NAMES = ("direct", "nginx", "gateway")
TTFB_TRIES = 10
TARGETS = {"gateway_over_nginx_c32": 0.9, "added_p50_over_nginx_c1": 1.1, "ttfb_ms": 50.0}
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


class BenchError(RuntimeError):
    """The setup is broken, so the numbers would mean nothing."""


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    proxy_cpu_us: float = 0.0  # the proxy process's CPU time per request (0: no proxy)


def require_tools() -> None:
    """Fail early and clearly: the benchmark is meaningless without both tools."""
    missing = [tool for tool in ("wrk", "nginx") if not shutil.which(tool, path=_path())]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: install with `apt-get install wrk nginx`")


def _path() -> str:
    """PATH plus sbin, where Debian puts nginx for non-login shells."""
    return os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin"


def free_port() -> int:
    """A port nothing listens on now (the tiny race before nginx binds it is acceptable)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_status(url: str, headers: dict[str, str]) -> int:
    """The HTTP status of one GET, 0 when nothing answered."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def ready_worker_ports(platform: Platform) -> list[int]:
    """The two workers' ports, once both are ready (warm), from the control API's status."""
    deadline = time.monotonic() + 30
    while True:
        status = platform.call("GET", "/api/v1/status")
        endpoint = next(e for e in status["endpoints"] if e["name"] == "bench-lb")
        ports = [w["port"] for w in endpoint["workers"] if w["state"] == "ready"]
        if len(ports) == 2:
            return ports
        if time.monotonic() > deadline:
            raise BenchError(f"expected two ready workers, got {ports}")
        time.sleep(0.1)


def start_nginx(
    tmp: Path, ports: list[int], headers: dict[str, str], secret: tuple[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    """nginx in the foreground, everything it writes under `tmp`; returns it once it answers.
    It sends the workers' gateway secret, as the platform's gateway does."""
    listen = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port_a=ports[0], port_b=ports[1], listen=listen,
                                      secret_header=secret[0], secret=secret[1]))
    nginx = shutil.which("nginx", path=_path()) or "nginx"
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while get_status(f"http://127.0.0.1:{listen}/hello", headers) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            log = (tmp / "error.log").read_text() if (tmp / "error.log").exists() else ""
            raise BenchError(f"nginx did not answer 200 on port {listen}:\n{log}")
        time.sleep(0.05)
    return proc, listen


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process we started, by its PID."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk_command(url: str, threads: int, connections: int, seconds: float,
                auth: list[str]) -> list[str]:
    """`auth`: the header lines every request carries (the token, the workers' secret)."""
    headers = [arg for line in auth for arg in ("-H", line)]
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
            *headers, url]


def parse_wrk(output: str) -> Sample:
    """req/s and p50 (ms) from `wrk --latency`; non-2xx answers mean a broken target."""
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"Latency Distribution\s+50%\s+([\d.]+)(us|ms|s)\b", output)
    if bad or not rps or not p50:
        raise BenchError(f"wrk reported errors or unparsable output:\n{output}")
    return Sample(float(rps.group(1)), float(p50.group(1)) * UNITS_MS[p50.group(2)])


def run_wrk(urls: list[str], threads: int, connections: int, seconds: float,
            auth: list[str]) -> Sample:
    """One wrk per URL, all at once; req/s summed, p50 averaged (the split is even)."""
    procs = [subprocess.Popen(wrk_command(url, threads, connections, seconds, auth),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for url in urls]
    samples = [parse_wrk(proc.communicate(timeout=seconds + 30)[0]) for proc in procs]
    return Sample(sum(s.rps for s in samples), statistics.mean(s.p50_ms for s in samples))


def parent_and_cpu(stat: str) -> tuple[int, float]:
    """A process's parent and the user + system CPU seconds it has used, from the text of
    its /proc/PID/stat."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """The CPU seconds a process has used so far (Linux /proc)."""
    return parent_and_cpu(Path(f"/proc/{pid}/stat").read_text())[1]


def measure(name: str, concurrency: int, urls: dict[str, str], direct: list[str],
            seconds: float, auth: list[str], proxies: dict[str, int] | None = None
            ) -> Sample:
    """One wrk run of `name` at `concurrency`, two load-generator threads at most, with the
    CPU time the proxy (`proxies`: name -> PID) spent per request meanwhile."""
    if concurrency == 1:
        targets, threads = [direct[0] if name == "direct" else urls[name]], 1
    elif name == "direct":
        targets, threads, concurrency = direct, 1, concurrency // 2
    else:
        targets, threads = [urls[name]], 2
    pid = (proxies or {}).get(name)
    before = cpu_seconds(pid) if pid else 0.0
    sample = run_wrk(targets, threads, concurrency, seconds, auth)
    if not pid:
        return sample
    used = cpu_seconds(pid) - before
    return Sample(sample.rps, sample.p50_ms, used / (sample.rps * seconds) * 1e6)


Runs = dict[tuple[str, int], list[Sample]]  # (target, concurrency) -> one sample per round


def benchmark(urls: dict[str, str], direct: list[str], seconds: float, rounds: int,
              auth: list[str], proxies: dict[str, int]) -> Runs:
    """Targets interleaved within each round, so the machine's noise hits all of them alike."""
    for name in TARGET_NAMES:  # warm-up: connections, pools, caches
        measure(name, 32, urls, direct, 1, auth, proxies)
    runs: Runs = {}
    for _ in range(rounds):
        for concurrency in CONCURRENCIES:
            for name in TARGET_NAMES:
                sample = measure(name, concurrency, urls, direct, seconds, auth, proxies)
                runs.setdefault((name, concurrency), []).append(sample)
    return runs


def medians(runs: Runs) -> dict[tuple[str, int], Sample]:
    return {key: Sample(statistics.median(s.rps for s in samples),
                        statistics.median(s.p50_ms for s in samples),
                        statistics.median(s.proxy_cpu_us for s in samples))
            for key, samples in runs.items()}


def paired(runs: Runs) -> dict[str, list[float]]:
    """The target ratios within each round (the same minutes of the machine), one per round:
    on a shared machine whose speed drifts, more telling than ratios of medians."""
    rounds = range(len(runs[("direct", 1)]))

    def added(name: str, i: int) -> float:
        return runs[(name, 1)][i].p50_ms - runs[("direct", 1)][i].p50_ms

    return {
        "gateway_over_nginx_c32": [runs[("gateway", 32)][i].rps / runs[("nginx", 32)][i].rps
                                   for i in rounds],
        "added_p50_over_nginx_c1": [added("gateway", i) / added("nginx", i) for i in rounds
                                    if added("nginx", i) > 0],
    }


def first_body_byte_ms(port: int, path: str, auth: list[str]) -> float:
    """Time from sending a GET to the first byte of its body (chunked: the first chunk's data)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   + "".join(f"{line}\r\n" for line in auth) + "Connection: close\r\n\r\n")
        started = time.perf_counter()
        sock.sendall(request.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError(f"connection closed before a body byte: {data[:300]!r}")
            data += chunk
            if _has_body_byte(data):
                return (time.perf_counter() - started) * 1000


def _has_body_byte(data: bytes) -> bool:
    """Whether `data` (a response so far) holds at least one byte of body data."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        raise BenchError(f"stream answered: {head[:300]!r}")
    if b"transfer-encoding: chunked" not in head.lower():
        return len(body) > 0
    size_line, crlf, rest = body.partition(b"\r\n")
    return bool(crlf) and int(size_line.split(b";")[0], 16) > 0 and len(rest) > 0


def ttfb(targets: dict[str, tuple[int, str]], auth: list[str]) -> dict[str, float]:
    """Median time to first streamed byte per target, interleaved like the throughput runs."""
    tries: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(TTFB_TRIES):
        for name, (port, path) in targets.items():
            tries[name].append(first_body_byte_ms(port, path, auth))
    return {name: statistics.median(values) for name, values in tries.items()}


def report(runs: Runs, firsts: dict[str, float]) -> None:
    """The table, the ratios, the streamed TTFBs and PASS/FAIL against the issue's targets
    (judged on the per-round ratios' median)."""
    rows = medians(runs)
    print(f"{'target':8s} {'conc':>4s} {'req/s':>9s} {'p50 ms':>8s} {'proxy CPU us/req':>17s}")
    for concurrency in CONCURRENCIES:
        for name in TARGET_NAMES:
            row = rows[(name, concurrency)]
            cpu = f"{row.proxy_cpu_us:17.1f}" if row.proxy_cpu_us else f"{'-':>17s}"
            print(f"{name:8s} {concurrency:4d} {row.rps:9.0f} {row.p50_ms:8.3f} {cpu}")
    added: dict[tuple[str, int], float] = {}
    for concurrency in CONCURRENCIES:
        direct = rows[("direct", concurrency)]
        for name in ("nginx", "gateway"):
            row = rows[(name, concurrency)]
            added[(name, concurrency)] = row.p50_ms - direct.p50_ms
            print(f"c={concurrency:<2d} {name:7s}/direct throughput {row.rps / direct.rps:.2f}x, "
                  f"added p50 {added[(name, concurrency)]:+.3f} ms")
    over_nginx = rows[("gateway", 32)].rps / rows[("nginx", 32)].rps
    print(f"c=32 gateway/nginx throughput {over_nginx:.2f}x")
    print("time to first streamed byte (median of "
          f"{TTFB_TRIES}): " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in firsts.items()))
    ratios = paired(runs)
    within = {name: statistics.median(values) for name, values in ratios.items()}
    for name, label in (("gateway_over_nginx_c32", "c=32 gateway/nginx throughput"),
                        ("added_p50_over_nginx_c1", "c=1  gateway/nginx added p50")):
        values = ratios[name]
        print(f"per round: {label} median {within[name]:.2f}x "
              f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} rounds)")
    checks = [
        (f"gateway throughput >= {TARGETS['gateway_over_nginx_c32']}x nginx at concurrency 32",
         within["gateway_over_nginx_c32"] >= TARGETS["gateway_over_nginx_c32"]),
        (f"gateway added p50 <= {TARGETS['added_p50_over_nginx_c1']}x nginx added p50 at "
         "concurrency 1",
         within["added_p50_over_nginx_c1"] <= TARGETS["added_p50_over_nginx_c1"]),
        (f"streamed TTFB through the gateway < {TARGETS['ttfb_ms']:g} ms",
         firsts["gateway"] < TARGETS["ttfb_ms"]),
    ]
    for name, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


@contextlib.contextmanager
def deployed(prefix: str = "flash-bench") -> Iterator[tuple[Platform, list[dict[str, Any]]]]:
    """The two-route project on a fresh platform (its own FLASH_HOME, a free port), both
    workers warm; the platform is stopped (`flash platform stop`) on the way out, whatever
    happens. Yields the platform and the deploy results (one endpoint)."""
    home = tempfile.mkdtemp(prefix=f"{prefix}-")
    os.environ.update({"FLASH_HOME": home, "FLASH_PLATFORM_PORT": "0"})
    from runpod_flash.deploy import deploy_project

    project = Path(tempfile.mkdtemp(prefix=f"{prefix}-project-"))
    (project / "service.py").write_text(PROJECT)
    try:
        platform, results = deploy_project(project)
        ready_worker_ports(platform)
        yield platform, results
    finally:
        subprocess.run([sys.executable, "-m", "runpod_flash.cli", "platform", "stop"],
                       env={**os.environ, "FLASH_HOME": home}, capture_output=True, timeout=60)


def platform_pid() -> int:
    """The running platform's process (it publishes its PID in FLASH_HOME)."""
    from runpod_flash import config

    return int(json.loads(config.platform_info_path().read_text())["pid"])


def run(seconds: float, rounds: int) -> None:
    """Deploy, start nginx, measure, report; nginx and the platform are stopped whatever happens."""
    nginx = None
    with deployed() as (platform, results):
        try:
            ports = ready_worker_ports(platform)
            auth = f"Bearer {platform.token}"
            gateway_url = f"{platform.url}{results[0]['path']}"
            if get_status(f"{gateway_url}/hello", {"Authorization": auth}) != 200:
                raise BenchError(f"the gateway does not answer 200 at {gateway_url}/hello")
            # Workers answer only requests with their gateway secret (the platform token's
            # holder may read it): nginx and the direct runs send it too.
            answer = platform.call("GET",
                                   f"/api/v1/endpoints/{results[0]['id']}/gateway-secret")
            secret = (answer["header"], answer["value"])
            nginx, nginx_port = start_nginx(Path(tempfile.mkdtemp(prefix="flash-bench-nginx-")),
                                            ports, {"Authorization": auth}, secret)
            lines = [f"Authorization: {auth}", f"{secret[0]}: {secret[1]}"]
            urls = {"nginx": f"http://127.0.0.1:{nginx_port}/hello",
                    "gateway": f"{gateway_url}/hello"}
            direct = [f"http://127.0.0.1:{port}/hello" for port in ports]
            proxies = {"nginx": nginx.pid, "gateway": platform_pid()}
            runs = benchmark(urls, direct, seconds, rounds, lines, proxies)
            gateway_port = int(platform.url.rsplit(":", 1)[1])
            firsts = ttfb({"direct": (ports[0], "/stream"), "nginx": (nginx_port, "/stream"),
                           "gateway": (gateway_port, f"{results[0]['path']}/stream")}, lines)
        finally:
            if nginx is not None:
                stop(nginx)
    report(runs, firsts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    options = parser.parse_args()
    require_tools()
    try:
        run(options.seconds, options.rounds)
    except BenchError as exc:
        sys.exit(f"broken: {exc}")


if __name__ == "__main__":
    main()
