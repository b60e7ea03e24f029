"""Live call latency, measured side by side with a bare uvicorn app in one run.

Prints p50/p99 of a warm live call of a trivial function (sync and async), of a plain HTTP
POST to a bare uvicorn app on this machine (same client), their ratio, the first-call time
with the platform up and no worker, and the first-call time with no platform at all.

    python benchmarks/live_call.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable

from timing import percentiles, timed

BARE_APP = textwrap.dedent("""
    import json, socket, sys, uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = json.dumps({"ok": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    sock = socket.socket()
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                  lifespan="off")).run(sockets=[sock])
""")

FIRST_CALL = textwrap.dedent("""
    import time
    from runpod_flash import CpuLiveLoadBalancer, remote
    api = CpuLiveLoadBalancer(name="bench-cold")
    @remote(api, method="POST", path="/noop")
    def noop():
        return None
    started = time.perf_counter()
    noop()
    print(time.perf_counter() - started)
""")

TARGETS = {"warm_p50_ms": 2.0, "warm_ratio": 5.0, "no_worker_s": 1.0, "no_platform_s": 2.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BareUvicorn:
    """A bare uvicorn app in its own process: the round trip our live call is compared to."""

    BODY = b'{"function_name": "noop", "args": "gASVBwAAAAAAAAApfZSGlC4="}'

    def __enter__(self) -> Callable[[], object]:
        from runpod_flash.http.blocking import request

        port = free_port()
        self.server = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 15
        while True:
            try:
                request("POST", url, b"{}", {}, 2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return lambda: request("POST", url, self.BODY, {}, 5)

    def __exit__(self, *exc_info: object) -> None:
        self.server.terminate()
        self.server.wait(10)


def stop_platform(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "runpod_flash.cli", "platform", "stop"], env=env,
                   capture_output=True, timeout=60, check=True)


def first_call_no_platform() -> float:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "FLASH_HOME": home, "FLASH_PLATFORM_PORT": "0"}
        result = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env,
                                capture_output=True, text=True, timeout=120)
        stop_platform(env)
        return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    options = parser.parse_args()

    home = tempfile.mkdtemp(prefix="flash-bench-")
    os.environ.update({"FLASH_HOME": home, "FLASH_PLATFORM_PORT": "0"})
    from runpod_flash import CpuLiveLoadBalancer, remote

    api = CpuLiveLoadBalancer(name="bench-warm")

    @remote(api, method="POST", path="/noop")
    def noop() -> None:
        return None

    @remote(api, method="POST", path="/anoop")
    async def anoop() -> None:
        return None

    noop()  # starts the platform and the worker
    loop = asyncio.new_event_loop()

    def anoop_blocking() -> None:
        loop.run_until_complete(anoop())

    warm_sync: list[float] = []
    warm_async: list[float] = []
    bare: list[float] = []
    rounds = 10  # interleaved, so drift on a noisy machine hits all three series alike
    with BareUvicorn() as bare_post:
        for call in (noop, anoop_blocking, bare_post):  # warm-up, discarded
            timed(call, options.calls // 10)
        for _ in range(rounds):
            warm_sync += timed(noop, options.calls // rounds)
            warm_async += timed(anoop_blocking, options.calls // rounds)
            bare += timed(bare_post, options.calls // rounds)
    loop.close()

    cold_api = CpuLiveLoadBalancer(name="bench-no-worker")

    @remote(cold_api, method="POST", path="/noop")
    def cold_noop() -> None:
        return None

    started = time.perf_counter()
    cold_noop()
    no_worker_s = time.perf_counter() - started

    stop_platform(dict(os.environ))
    no_platform_s = first_call_no_platform()

    sync_p50, sync_p99 = percentiles(warm_sync)
    async_p50, async_p99 = percentiles(warm_async)
    bare_p50, bare_p99 = percentiles(bare)
    ratio = sync_p50 / bare_p50
    print(f"calls per series: {options.calls}")
    print(f"warm live call, def        p50 {sync_p50:.3f} ms  p99 {sync_p99:.3f} ms")
    print(f"warm live call, async def  p50 {async_p50:.3f} ms  p99 {async_p99:.3f} ms")
    print(f"bare uvicorn POST          p50 {bare_p50:.3f} ms  p99 {bare_p99:.3f} ms")
    print(f"ratio live/bare (p50)      {ratio:.2f}x")
    print(f"first call, platform up, no worker  {no_worker_s:.3f} s")
    print(f"first call, no platform             {no_platform_s:.3f} s")
    checks = [
        ("warm p50 <= 2 ms", sync_p50 <= TARGETS["warm_p50_ms"]),
        ("warm p50 <= 5x bare uvicorn", ratio <= TARGETS["warm_ratio"]),
        ("first call with no worker <= 1 s", no_worker_s <= TARGETS["no_worker_s"]),
        ("first call with no platform <= 2 s", no_platform_s <= TARGETS["no_platform_s"]),
    ]
    for name, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


if __name__ == "__main__":
    main()
