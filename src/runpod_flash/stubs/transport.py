"""Blocking HTTP/1.1 with keep-alive, one connection per thread and host.

The SDK's calls block (`def` functions) or run on a thread pool (`async def` functions), so
a plain `http.client` connection per thread is the fastest client that works under any event
loop, or none; it needs no event-loop-bound session to clean up.
"""

from __future__ import annotations

import http.client
import threading
from urllib.parse import urlsplit

_local = threading.local()
# A server may close an idle keep-alive connection just as we reuse it: the request was not
# processed, so sending it again on a fresh connection is safe.
_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
    http.client.CannotSendRequest,
)


def _connection(host: str, port: int, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
    pool: dict[tuple[str, int], http.client.HTTPConnection] = _local.__dict__.setdefault("pool", {})
    connection = pool.get((host, port))
    if connection is not None:
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection, True
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    pool[(host, port)] = connection
    return connection, False


def _drop(host: str, port: int) -> None:
    connection = _local.__dict__.get("pool", {}).pop((host, port), None)
    if connection is not None:
        connection.close()


def request(
    method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    """Send one request and read the whole response: (status, body).

    Raises TimeoutError when no answer comes within `timeout`, ConnectionError when the
    server cannot be reached.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    all_headers = {"Content-Type": "application/json", **headers}
    retry_stale = True
    while True:
        connection, reused = _connection(host, port, timeout)
        try:
            connection.request(method, target or "/", body=body, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
        except _STALE_CONNECTION_ERRORS:
            _drop(host, port)
            if reused and retry_stale:
                retry_stale = False
                continue
            raise ConnectionError(f"connection to {host}:{port} closed unexpectedly") from None
        except OSError:  # TimeoutError and refused connections included
            _drop(host, port)
            raise
        if response.will_close:
            _drop(host, port)
        return response.status, data
