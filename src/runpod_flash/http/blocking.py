"""The blocking HTTP/1.1 client: one kept-alive socket per thread and host.

The SDK's calls block (`def` functions) or run on a thread pool (`async def` functions
through `asyncio.to_thread`), so a plain socket per thread works under any event loop, or
none, with nothing bound to a loop to clean up. Responses are read by the same parser as
the asyncio client's (`parse.ResponseParser`), with the same rules: interim 1xx skipped,
HEAD without a body, a pooled socket checked before reuse, and a failed reused socket
retried only for idempotent methods, so a POST is never sent twice.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from runpod_flash.http.errors import ConnectFailed, ConnectionClosed, HttpError, ResponseTimeout
from runpod_flash.http.headers import Headers
from runpod_flash.http.parse import IDEMPOTENT, ResponseParser, request_head

RECV_BYTES = 256 * 1024
KEEPALIVE_EXPIRY_S = 300.0
CONNECT_TIMEOUT_S = 10.0

_local = threading.local()


class _Socket:
    __slots__ = ("idle_since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = time.monotonic()

    def still_open(self, now: float) -> bool:
        if now - self.idle_since > KEEPALIVE_EXPIRY_S:
            return False
        # Readable while idle means the server closed it (or sent junk): not reusable.
        return not select.select([self.sock], [], [], 0)[0]


Key = tuple[str, int, bool]  # host, port, TLS


def _pool() -> dict[Key, _Socket]:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    return pool


def _checkout(key: Key) -> _Socket | None:
    kept = _pool().pop(key, None)
    if kept is not None and not kept.still_open(time.monotonic()):
        kept.sock.close()
        return None
    return kept


def _connect(key: Key, timeout: float) -> _Socket:
    host, port, tls = key
    try:
        sock = socket.create_connection((host, port), timeout=min(timeout, CONNECT_TIMEOUT_S))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:  # webhooks and remote platforms may be https
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    except TimeoutError:
        raise ConnectFailed(f"connect to {host}:{port} timed out") from None
    except OSError as exc:  # ssl.SSLError included
        raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from None
    return _Socket(sock)


class Response:
    """A response whose head has arrived; iterate (or `read()`) for the body."""

    def __init__(self, key: Key, kept: _Socket, parser: ResponseParser) -> None:
        self.status = parser.status
        self.headers: Headers = parser.headers
        self._key = key
        self._kept: _Socket | None = kept
        self._parser = parser

    def __iter__(self) -> Iterator[bytes]:
        parser = self._parser
        while True:
            if parser.chunks:
                yield parser.take()
            elif parser.complete:
                break
            else:
                _receive(self._kept_socket(), parser)
        self._release()

    def read(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        """Release the socket: kept if the response ended cleanly, closed otherwise."""
        if self._kept is None:
            return
        if self._parser.complete:
            self._release()
        else:
            self._kept.sock.close()
            self._kept = None

    def _kept_socket(self) -> socket.socket:
        assert self._kept is not None, "response already closed"
        return self._kept.sock

    def _release(self) -> None:
        kept, self._kept = self._kept, None
        if kept is None:
            return
        if not self._parser.keep_alive:
            kept.sock.close()
            return
        kept.idle_since = time.monotonic()
        previous = _pool().pop(self._key, None)
        if previous is not None:
            previous.sock.close()
        _pool()[self._key] = kept


def _receive(sock: socket.socket, parser: ResponseParser) -> None:
    """Feed the parser the next bytes; raises on close, timeout or bad bytes."""
    try:
        data = sock.recv(RECV_BYTES)
    except TimeoutError:
        sock.close()
        raise ResponseTimeout("no response bytes within the timeout") from None
    except OSError as exc:
        sock.close()
        raise ConnectionClosed(str(exc), response_started=parser.started) from None
    try:
        if data:
            parser.feed(data)
        else:
            parser.feed_eof()
    except HttpError:
        sock.close()
        raise


def _split(url: str) -> tuple[Key, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL {url!r}: expected http:// or https://")
    tls = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls), target


def open_response(
    method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> Response:
    """Send a request and return once the final response head is in.

    `timeout` bounds the connect, the wait for the head and each wait for body bytes.
    Raises ConnectFailed, ConnectionClosed, ProtocolError or ResponseTimeout (all OSError).
    """
    key, target = _split(url)
    payload = body or b""
    wire_headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in headers.items()]
    if body is not None and not any(name == b"content-type" for name, _ in wire_headers):
        wire_headers.append((b"content-type", b"application/json"))
    head = request_head(method, target, f"{key[0]}:{key[1]}".encode("latin-1"),
                        wire_headers, len(payload))
    while True:
        kept = _checkout(key)
        reused = kept is not None
        if kept is None:
            kept = _connect(key, timeout)
        parser = ResponseParser(head_request=method == "HEAD")
        try:
            kept.sock.settimeout(timeout)
            kept.sock.sendall(head + payload)
            while not parser.head_complete:
                _receive(kept.sock, parser)
        except ConnectionClosed as exc:
            kept.sock.close()
            if reused and not exc.response_started:
                if method in IDEMPOTENT:
                    continue
                raise ConnectionClosed(
                    f"{exc}; a kept-alive connection to {key[0]}:{key[1]} closed before "
                    f"answering, and a {method} is not resent because it may have run"
                ) from None
            raise
        except HttpError:  # a timeout or bad bytes: the request may be running
            kept.sock.close()
            raise
        except OSError as exc:  # sendall on a reset socket
            kept.sock.close()
            if reused and method in IDEMPOTENT and not parser.started:
                continue
            raise ConnectionClosed(f"connection to {key[0]}:{key[1]} failed: {exc}") from None
        return Response(key, kept, parser)


def request(
    method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    """One whole exchange: (status, body). Raises OSError subclasses (see `open_response`)."""
    response = open_response(method, url, body, headers, timeout)
    try:
        return response.status, response.read()
    finally:
        response.close()


@contextlib.contextmanager
def stream(
    method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> Iterator[Response]:
    """`open_response` as a context manager that always releases the socket."""
    response = open_response(method, url, body, headers, timeout)
    try:
        yield response
    finally:
        response.close()
