"""Routes the HTTP conformance suite drives through the gateway.

Every route takes the request itself (`request: Request`) or returns a Starlette response, so
the suite sees exactly what the worker received and controls exactly what it sends. Waits in
the worker are bounded: nothing here runs forever if a test goes away.
"""

import asyncio
import hashlib
import os
import socket
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from runpod_flash import CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="conformance", workersMin=1, workersMax=1)
slow_api = CpuLoadBalancerSlsResource(
    name="conformance-slow", workersMin=1, workersMax=1, executionTimeoutMs=1000
)

CHUNK = b"x" * 65536
MAX_WAIT_S = 20.0


def _seen(request: Request, body: bytes = b"") -> JSONResponse:
    return JSONResponse({
        "id": request.query_params.get("id", ""),
        "method": request.method,
        "headers": [[name, value] for name, value in request.headers.items()],
        "pid": os.getpid(),
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    })


async def _wait_for_file(path: str) -> None:
    deadline = time.monotonic() + MAX_WAIT_S
    while not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _count(path: str) -> int:
    with open(path, "a") as handle:
        handle.write("done\n")
    return len(Path(path).read_text().splitlines())


def _own_connection(request: Request, action) -> None:
    """Run `action` on the socket this request came on (found by its peer address)."""
    client = request.scope.get("client")
    for fd in os.listdir("/proc/self/fd"):
        try:
            copy = os.dup(int(fd))
        except OSError:
            continue
        try:
            sock = socket.socket(fileno=copy)
        except OSError:
            os.close(copy)
            continue
        try:
            if list(sock.getpeername()[:2]) == list(client or []):
                action(sock)
        except OSError:
            pass
        finally:
            sock.close()


def _shut_own_connection(request: Request) -> None:
    """Close the connection this request came on, before any response byte is sent."""
    _own_connection(request, lambda sock: sock.shutdown(socket.SHUT_RDWR))


@remote(api, method="GET", path="/echo")
async def echo_get(request: Request):
    """What the worker saw: headers, method, its pid."""
    return _seen(request)


@remote(api, method="POST", path="/echo")
async def echo_post(request: Request):
    """What the worker saw, with the body's length and hash."""
    return _seen(request, await request.body())


@remote(api, method="GET", path="/early")
async def early(request: Request):
    """A `103 Early Hints` interim response written on the connection, then the answer."""
    _own_connection(request, lambda sock: sock.send(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"))
    return {"id": request.query_params.get("id", "")}


@remote(api, method="GET", path="/nocontent")
async def nocontent(request: Request):
    return Response(status_code=204)


@remote(api, method="GET", path="/notmodified")
async def notmodified(request: Request):
    return Response(status_code=304, headers={"etag": '"v1"'})


@remote(api, method="GET", path="/hop")
async def hop(request: Request):
    """A response carrying hop-by-hop headers, one of them named by `Connection`."""
    return Response(b"hop", headers={
        "Connection": "x-private",
        "x-private": "1",
        "Keep-Alive": "timeout=5",
        "Upgrade": "h2c",
        "Trailer": "x-trailer",
        "x-kept": "yes",
    })


@remote(api, method="GET", path="/stream")
async def stream(request: Request):
    """`first`, then `last` only once the marker file exists."""
    marker = request.query_params["marker"]

    async def body():
        yield b"first\n"
        await _wait_for_file(marker)
        yield b"last\n"

    return StreamingResponse(body(), media_type="text/plain")


@remote(api, method="GET", path="/sse")
async def sse(request: Request):
    """Event n+1 only once `{marker}.{n}` exists."""
    marker = request.query_params["marker"]

    async def events():
        for n in (1, 2, 3):
            if n > 1:
                await _wait_for_file(f"{marker}.{n - 1}")
            yield f"data: {n}\n\n".encode()

    return StreamingResponse(events(), media_type="text/event-stream")


@remote(api, method="GET", path="/big")
async def big(request: Request):
    """`n` chunks of 64 KiB (1600: 100 MiB), streamed."""
    count = int(request.query_params.get("n", "1600"))

    async def chunks():
        for _ in range(count):
            yield CHUNK

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@remote(api, method="GET", path="/endless")
async def endless(request: Request):
    """1 KiB every 10 ms for up to 8 s. `{marker}.started` appears when it starts; `marker`
    then says whether it was cancelled (the client went away) or ran to the end."""
    marker = request.query_params["marker"]

    async def ticks():
        outcome = "completed"
        Path(f"{marker}.started").touch()
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                yield b"t" * 1024
                await asyncio.sleep(0.01)
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "cancelled"
            raise
        finally:
            Path(marker).write_text(outcome)

    return StreamingResponse(ticks(), media_type="application/octet-stream")


@remote(api, method="POST", path="/count")
async def count(request: Request):
    """Counts completed invocations (whole body received) in the file `file`."""
    body = await request.body()
    return {"n": _count(request.query_params["file"]), "length": len(body)}


@remote(api, method="GET", path="/drop")
async def drop_get(request: Request):
    """First call: the connection is closed before any response byte; later calls answer."""
    n = _count(request.query_params["file"])
    if n == 1:
        _shut_own_connection(request)
    return {"n": n, "pid": os.getpid()}


@remote(api, method="POST", path="/drop")
async def drop_post(request: Request):
    """As GET /drop, for a method that must never be sent twice."""
    await request.body()
    n = _count(request.query_params["file"])
    if n == 1:
        _shut_own_connection(request)
    return {"n": n, "pid": os.getpid()}


@remote(slow_api, method="GET", path="/slow")
async def slow(request: Request):
    """Answers after 4 s, longer than the endpoint's 1 s execution timeout."""
    await asyncio.sleep(4)
    return {"slow": True}
