"""The blocking client against raw socket servers that send hand-written bytes."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runpod_flash.http import blocking
from runpod_flash.http.errors import ConnectionClosed, ResponseTimeout

WAIT_S = 5.0

Handler = Callable[["ThreadServer", socket.socket, int], None]


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class ThreadServer:
    """Accepts on a thread; `handler(server, conn, n)` serves connection n on its own."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.seen: list[tuple[int, str, str]] = []  # (connection number, method, target)
        self.errors: list[BaseException] = []
        self.go = threading.Event()  # the test lets the handler go on
        self.done = threading.Event()  # the handler reached its end
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.port}{target}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, self.accepted),
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        try:
            self.handler(self, conn, n)
        except OSError:
            pass  # the client went away (or the server is closing)
        except Exception as exc:  # a broken handler must fail its test
            self.errors.append(exc)
        finally:
            conn.close()

    def read_request(self, conn: socket.socket, n: int) -> tuple[str, bytes]:
        """One request (head and Content-Length body): (method, target)."""
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                raise ConnectionError("client closed")
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        method, target, _ = head.split(b" ", 2)
        if b"content-length: " in head:
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += conn.recv(65536)
        self.seen.append((n, method.decode(), target.decode()))
        return method.decode(), target

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.go.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in [self._thread, *self._threads]:
            thread.join(WAIT_S)


@contextlib.contextmanager
def serving(handler: Handler) -> Iterator[ThreadServer]:
    server = ThreadServer(handler)
    try:
        yield server
    finally:
        server.close()
    assert not server.errors, server.errors


@pytest.fixture(autouse=True)
def _fresh_pool() -> Iterator[None]:
    """Each test starts and ends with no kept socket on this thread."""
    yield
    for kept in blocking._pool().values():
        kept.sock.close()
    blocking._pool().clear()


def answer_each(server: ThreadServer, conn: socket.socket, n: int) -> None:
    while True:
        _, target = server.read_request(conn, n)
        conn.sendall(ok(target))


def until_eof(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


def test_1xx_interim_responses_are_skipped_and_the_socket_stays_in_step() -> None:
    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        server.read_request(conn, n)
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        conn.sendall(ok(b"final"))
        answer_each(server, conn, n)

    with serving(handler) as server:
        assert blocking.request("POST", server.url("/up"), b"{}", {}, WAIT_S) == (200, b"final")
        assert blocking.request("GET", server.url("/next"), None, {}, WAIT_S) == (200, b"/next")
        assert server.accepted == 1


def test_head_with_content_length_returns_without_a_body_and_the_socket_is_reused() -> None:
    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        while True:
            method, _ = server.read_request(conn, n)
            if method == "HEAD":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                conn.sendall(ok(b"after head"))

    with serving(handler) as server:
        started = time.monotonic()
        assert blocking.request("HEAD", server.url("/"), None, {}, 2.0) == (200, b"")
        assert time.monotonic() - started < 1.5
        assert blocking.request("GET", server.url("/"), None, {}, WAIT_S) == (200, b"after head")
        assert server.accepted == 1


class RecordingSocket:
    """Stands in for a kept socket and records what is sent on it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_kept_socket_closed_by_the_server_is_detected_before_reuse(method: str) -> None:
    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        _, target = server.read_request(conn, n)
        conn.sendall(ok(target))
        server.go.wait(WAIT_S)
        conn.close()
        server.done.set()

    with serving(handler) as server:
        assert blocking.request("GET", server.url("/first"), None, {}, WAIT_S) == (
            200, b"/first")
        (kept,) = blocking._pool().values()
        recorder = RecordingSocket(kept.sock)
        kept.sock = recorder  # type: ignore[assignment]
        server.go.set()
        assert server.done.wait(WAIT_S)
        assert blocking.request(method, server.url("/second"), b"{}", {}, WAIT_S) == (
            200, b"/second")
        assert recorder.sent == []  # nothing was sent on the dead socket
        assert server.seen == [(1, "GET", "/first"), (2, method, "/second")]


def _close_after_reading_second(rst: bool) -> Handler:
    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        while True:
            _, target = server.read_request(conn, n)
            if n == 1 and target == b"/second":  # read it, never answer
                if rst:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            conn.sendall(ok(target))
    return handler


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_get_on_reused_socket_closed_before_answering_is_retried_once(rst: bool) -> None:
    with serving(_close_after_reading_second(rst)) as server:
        blocking.request("GET", server.url("/first"), None, {}, WAIT_S)
        assert blocking.request("GET", server.url("/second"), None, {}, WAIT_S) == (
            200, b"/second")
        assert server.seen == [(1, "GET", "/first"), (1, "GET", "/second"),
                               (2, "GET", "/second")]


@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_post_on_reused_socket_closed_before_answering_is_not_resent(rst: bool) -> None:
    with serving(_close_after_reading_second(rst)) as server:
        blocking.request("GET", server.url("/first"), None, {}, WAIT_S)
        with pytest.raises(ConnectionClosed, match="not resent") as caught:
            blocking.request("POST", server.url("/second"), b"{}", {}, WAIT_S)
        assert caught.value.response_started is False
        assert server.seen == [(1, "GET", "/first"), (1, "POST", "/second")]
        assert server.accepted == 1


def test_connection_close_response_is_not_kept() -> None:
    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        server.read_request(conn, n)
        conn.sendall(ok(b"bye", b"Connection: close\r\n"))
        until_eof(conn)  # left open by the server: the client must close it
        if n == 1:
            server.done.set()

    with serving(handler) as server:
        for _ in range(2):
            assert blocking.request("GET", server.url("/"), None, {}, WAIT_S) == (200, b"bye")
        assert server.accepted == 2
        assert server.done.wait(WAIT_S)


def test_no_response_within_the_timeout_raises_response_timeout() -> None:
    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        server.read_request(conn, n)
        until_eof(conn)  # never answers
        server.done.set()

    with serving(handler) as server:
        started = time.monotonic()
        with pytest.raises(ResponseTimeout):
            blocking.request("GET", server.url("/"), None, {}, 0.2)
        assert time.monotonic() - started < 2.0
        assert server.done.wait(WAIT_S)  # the socket is closed, never kept
        assert blocking._pool() == {}


def test_pause_mid_body_over_the_timeout_raises_response_timeout() -> None:
    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        server.read_request(conn, n)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        until_eof(conn)
        server.done.set()

    with serving(handler) as server:
        with blocking.stream("GET", server.url("/"), None, {}, 0.2) as response:
            assert response.status == 200
            with pytest.raises(ResponseTimeout):
                response.read()
        assert server.done.wait(WAIT_S)
        assert blocking._pool() == {}


def test_streamed_response_yields_the_first_chunk_before_the_last_is_sent() -> None:
    sent_last: list[bool] = []

    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        server.read_request(conn, n)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        server.go.wait(WAIT_S)
        sent_last.append(True)
        conn.sendall(b"4\r\nlast\r\n0\r\n\r\n")
        until_eof(conn)

    with serving(handler) as server:
        with blocking.stream("GET", server.url("/"), None, {}, WAIT_S) as response:
            pieces = iter(response)
            assert next(pieces) == b"first"
            assert not sent_last
            server.go.set()
            assert b"".join(pieces) == b"last"
        assert len(blocking._pool()) == 1  # a cleanly ended stream keeps its socket


def test_timeout_on_a_reused_socket_is_not_retried() -> None:
    # A timeout is not a dead connection: the GET was received and may be running, and a
    # retry would double both the work and the caller's timeout.
    def handler(server: ThreadServer, conn: socket.socket, n: int) -> None:
        while server.read_request(conn, n)[1] == b"/first":
            conn.sendall(ok(b"/first"))
        until_eof(conn)  # never answers /slow

    with serving(handler) as server:
        blocking.request("GET", server.url("/first"), None, {}, WAIT_S)
        with pytest.raises(ResponseTimeout):
            blocking.request("GET", server.url("/slow"), None, {}, 0.3)
        assert server.seen == [(1, "GET", "/first"), (1, "GET", "/slow")]
