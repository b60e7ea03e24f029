"""Blocking HTTP/1.1 with keep-alive, one connection per thread and host.

The SDK's calls block (`def` functions) or run on a thread pool (`async def` functions), so a
plain socket per thread works under any event loop, or none, with nothing bound to a loop to
clean up. Responses are parsed by httptools (uvicorn's parser): `http.client` spent more
time parsing headers than the whole platform hop takes.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import httptools

_local = threading.local()
_RECV_BYTES = 256 * 1024


class _Response:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _pool() -> dict[tuple[str, int], socket.socket]:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    return pool


def _drop(key: tuple[str, int]) -> None:
    sock = _pool().pop(key, None)
    if sock is not None:
        sock.close()


def _exchange(sock: socket.socket, message: bytes) -> tuple[int, bytes, bool]:
    """Send one request and read its response: (status, body, keep-alive)."""
    sock.sendall(message)
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    while not response.complete:
        data = sock.recv(_RECV_BYTES)
        if not data:
            raise ConnectionResetError("server closed the connection")
        parser.feed_data(data)
    return parser.get_status_code(), b"".join(response.body), parser.should_keep_alive()


def request(
    method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    """Send one request and read the whole response: (status, body).

    Raises TimeoutError when no answer comes within `timeout` and OSError (ConnectionError
    included) when the server cannot be reached.
    """
    parts = urlsplit(url)
    key = (parts.hostname or "127.0.0.1", parts.port or 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    payload = body or b""
    head = [f"{method} {target} HTTP/1.1\r\nHost: {key[0]}:{key[1]}\r\n"]
    head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    head.append(f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    message = "".join(head).encode("latin-1") + payload
    pool = _pool()
    # A server may close an idle kept-alive connection just as we reuse it; that request
    # was never processed, so it is sent again, once, on a fresh connection.
    for reused in (key in pool, False):
        sock = pool.get(key)
        if sock is None:
            sock = socket.create_connection(key, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pool[key] = sock
        sock.settimeout(timeout)
        try:
            status, data, keep_alive = _exchange(sock, message)
        except (ConnectionResetError, BrokenPipeError) as exc:
            _drop(key)
            if reused:
                continue
            raise ConnectionError(f"connection to {key[0]}:{key[1]} closed: {exc}") from None
        except OSError:
            _drop(key)
            raise
        except httptools.HttpParserError as exc:
            _drop(key)
            raise ConnectionError(f"invalid HTTP response from {key[0]}:{key[1]}: {exc}") from None
        if not keep_alive:
            _drop(key)
        return status, data
    raise ConnectionError(f"connection to {key[0]}:{key[1]} kept closing")
