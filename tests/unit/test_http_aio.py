"""The asyncio client against raw servers that send hand-written bytes, one edge case each."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import pytest

from runpod_flash.http import aio
from runpod_flash.http.aio import HIGH_WATER, ConnectionPool, StreamedBody, Timeouts
from runpod_flash.http.errors import ConnectFailed, ConnectionClosed, ResponseTimeout

T = TypeVar("T")
WAIT_S = 5.0  # bound on every wait that should end at once; a hang fails, never blocks


async def within(awaitable: Awaitable[T], seconds: float = WAIT_S) -> T:
    return await asyncio.wait_for(awaitable, seconds)


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Request(NamedTuple):
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """A request line and headers; None on a clean close before any byte."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def decode_chunked(raw: bytes) -> bytes:
    pieces, at = [], 0
    while True:
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(pieces)
        pieces.append(raw[end + 2:end + 2 + size])
        assert raw[end + 2 + size:end + 4 + size] == b"\r\n"
        at = end + 4 + size


class RawServer:
    """Counts connections and requests; `handler(server, reader, writer, n)` writes bytes."""

    def __init__(self, handler: Callable[..., Awaitable[None]]) -> None:
        self.handler = handler
        self.port = 0
        self.accepted = 0
        self.seen: list[tuple[int, str, str]] = []  # (connection number, method, target)
        self.errors: list[BaseException] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def read_request(self, reader: asyncio.StreamReader, n: int) -> Request | None:
        head = await read_head(reader)
        if head is None:
            return None
        method, target, headers = head
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            raw = b""
            while not raw.endswith(b"0\r\n\r\n"):
                raw += await reader.readuntil(b"\r\n")
            body = decode_chunked(raw)
        else:
            body = b""
        self.seen.append((n, method, target))
        return Request(method, target, headers, body)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            await self.handler(self, reader, writer, self.accepted)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: the tests check what they expect of that
        except Exception as exc:  # a broken handler must fail its test
            self.errors.append(exc)
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(handler: Callable[..., Awaitable[None]]) -> AsyncIterator[RawServer]:
    server = RawServer(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for writer in server._writers:
            writer.transport.abort()
        for task in server._tasks:
            task.cancel()
        await asyncio.gather(*server._tasks, return_exceptions=True)
        await listener.wait_closed()
    assert not server.errors, server.errors


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool()
    try:
        yield pool
    finally:
        pool.close()


async def until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop everything until the client closes (a reset counts as closed)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


async def answer_each(server: RawServer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, n: int) -> None:
    """A plain keep-alive server: 200 with the target as body."""
    while (request := await server.read_request(reader, n)) is not None:
        writer.write(ok(request.target.encode()))
        await writer.drain()


# --- interim responses, HEAD, bodiless statuses --------------------------------------------

@pytest.mark.asyncio
async def test_100_continue_and_103_are_skipped_and_the_connection_stays_in_step() -> None:
    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        await server.read_request(reader, n)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        await writer.drain()
        writer.write(ok(b"final", b"X-Final: 1\r\n"))
        await answer_each(server, reader, writer, n)

    async with serving(handler) as server, client() as pool:
        status, headers, body = await within(
            pool.fetch("127.0.0.1", server.port, "POST", "/up", [], b"data"))
        assert (status, body) == (200, b"final")
        assert (b"x-final", b"1") in headers
        # The next request on the same connection gets its own answer, not a stray one.
        assert await within(pool.fetch("127.0.0.1", server.port, "GET", "/next", [])) == (
            200, [(b"content-length", b"5")], b"/next")
        assert server.accepted == 1


@pytest.mark.asyncio
async def test_head_with_content_length_and_no_body_returns_and_the_connection_is_reused(
) -> None:
    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        while (request := await server.read_request(reader, n)) is not None:
            if request.method == "HEAD":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                writer.write(ok(b"after head"))
            await writer.drain()

    async with serving(handler) as server, client() as pool:
        status, headers, body = await within(
            pool.fetch("127.0.0.1", server.port, "HEAD", "/", []), 2.0)
        assert (status, headers, body) == (200, [(b"content-length", b"1000")], b"")
        assert await within(pool.fetch("127.0.0.1", server.port, "GET", "/", [])) == (
            200, [(b"content-length", b"10")], b"after head")
        assert server.accepted == 1
        assert [method for _, method, _ in server.seen] == ["HEAD", "GET"]


@pytest.mark.asyncio
@pytest.mark.parametrize("head", [
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"x\"\r\n\r\n",
])
async def test_204_and_304_have_no_body_and_the_connection_is_reused(head: bytes) -> None:
    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        await server.read_request(reader, n)
        writer.write(head)
        await answer_each(server, reader, writer, n)

    async with serving(handler) as server, client() as pool:
        status, _, body = await within(pool.fetch("127.0.0.1", server.port, "GET", "/a", []))
        assert status in (204, 304) and body == b""
        assert (await within(pool.fetch("127.0.0.1", server.port, "GET", "/b", [])))[2] == b"/b"
        assert server.accepted == 1


# --- streaming and timeouts ---------------------------------------------------------------

@pytest.mark.asyncio
async def test_chunked_response_first_chunk_is_iterable_before_the_last_is_sent() -> None:
    first_seen = asyncio.Event()
    sent_last: list[bool] = []

    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        await server.read_request(reader, n)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await within(first_seen.wait())
        sent_last.append(True)
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()
        await until_eof(reader)

    async with serving(handler) as server, client() as pool:
        response = await within(pool.request("127.0.0.1", server.port, "GET", "/", []))
        pieces = []
        async for piece in response:
            if not pieces:
                assert piece == b"first" and not sent_last
                first_seen.set()
            pieces.append(piece)
        assert b"".join(pieces) == b"firstlast"


@pytest.mark.asyncio
async def test_no_response_head_within_first_byte_timeout_raises_response_timeout() -> None:
    closed = asyncio.Event()

    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        await server.read_request(reader, n)
        await until_eof(reader)  # never answers
        closed.set()

    async with serving(handler) as server, client() as pool:
        started = time.monotonic()
        with pytest.raises(ResponseTimeout):
            await within(pool.request("127.0.0.1", server.port, "GET", "/", [],
                                      timeouts=Timeouts(first_byte=0.2)))
        assert time.monotonic() - started < 2.0
        await within(closed.wait())  # the connection is dropped, never reused


@pytest.mark.asyncio
async def test_pause_mid_body_over_idle_timeout_raises_response_timeout() -> None:
    closed = asyncio.Event()

    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        await server.read_request(reader, n)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        await writer.drain()
        await until_eof(reader)  # the other 5 bytes never come
        closed.set()

    async with serving(handler) as server, client() as pool:
        response = await within(pool.request("127.0.0.1", server.port, "GET", "/", [],
                                             timeouts=Timeouts(idle=0.2)))
        assert response.status == 200
        with pytest.raises(ResponseTimeout):
            await within(response.read())
        await within(closed.wait())


@pytest.mark.asyncio
async def test_connect_refused_raises_connect_failed() -> None:
    with socket.socket() as bound:  # bound, not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        async with client() as pool:
            with pytest.raises(ConnectFailed):
                await within(pool.request("127.0.0.1", port, "GET", "/", []))


# --- connection reuse ---------------------------------------------------------------------

class ThreadServer:
    """A socket server on its own threads: it sends as fast as the kernel takes bytes, and
    can close a connection while the client's event loop is blocked and has not seen it."""

    def __init__(self, handler: Callable[[ThreadServer, socket.socket, int], None]) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.seen: list[tuple[int, str, str]] = []
        self.may_close = threading.Event()
        self.closed = threading.Event()
        self.errors: list[BaseException] = []
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

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
            pass  # the client went away, or close() below
        except Exception as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def read_request(self, conn: socket.socket, n: int) -> bytes:
        """Read one request (head and Content-Length body); returns its target."""
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                raise ConnectionError("closed")
            data += more
        method, target, _ = data.split(b" ", 2)
        head, _, body = data.partition(b"\r\n\r\n")
        if b"content-length: " in head:
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += conn.recv(65536)
        self.seen.append((n, method.decode(), target.decode()))
        return target

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.may_close.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in [self._thread, *self._threads]:
            thread.join(WAIT_S)


@contextlib.contextmanager
def thread_server(
    handler: Callable[[ThreadServer, socket.socket, int], None]
) -> Iterator[ThreadServer]:
    server = ThreadServer(handler)
    try:
        yield server
    finally:
        server.close()
    assert not server.errors, server.errors


def answer_then_close_when_told(server: ThreadServer, conn: socket.socket, n: int) -> None:
    conn.sendall(ok(server.read_request(conn, n)))
    server.may_close.wait(WAIT_S)
    conn.close()
    server.closed.set()


class RecordingTransport:
    """Stands in for a pooled connection's transport and records what is written on it."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("loop_saw_close", [False, True])
async def test_idle_connection_closed_by_server_is_detected_before_reuse(
    method: str, loop_saw_close: bool
) -> None:
    with thread_server(answer_then_close_when_told) as server:
        async with client() as pool:
            key = ("127.0.0.1", server.port)
            assert await within(pool.fetch(*key, "GET", "/first", [])) == (
                200, [(b"content-length", b"6")], b"/first")
            (pooled,) = pool._idle[key]
            recorder = RecordingTransport(pooled.transport)
            pooled.transport = recorder
            server.may_close.set()
            assert server.closed.wait(WAIT_S)  # blocks the loop: it has not seen the FIN
            if loop_saw_close:
                deadline = time.monotonic() + WAIT_S
                while not pooled.closed:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.001)
            status, _, body = await within(pool.fetch(*key, method, "/second", [], b"x"))
            assert (status, body) == (200, b"/second")
            assert recorder.written == []  # nothing was sent on the dead connection
            assert server.seen == [(1, "GET", "/first"), (2, method, "/second")]
            assert server.accepted == 2


def _close_after_reading_second(rst: bool) -> Callable[..., Awaitable[None]]:
    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        while (request := await server.read_request(reader, n)) is not None:
            if n == 1 and request.target == "/second":  # read it, never answer
                if rst:
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                return
            writer.write(ok(request.target.encode()))
            await writer.drain()
    return handler


@pytest.mark.asyncio
@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
async def test_get_on_reused_connection_closed_before_answering_is_retried_once(
    rst: bool
) -> None:
    async with serving(_close_after_reading_second(rst)) as server, client() as pool:
        await within(pool.fetch("127.0.0.1", server.port, "GET", "/first", []))
        status, _, body = await within(pool.fetch("127.0.0.1", server.port, "GET", "/second",
                                                  []))
        assert (status, body) == (200, b"/second")
        assert server.seen == [(1, "GET", "/first"), (1, "GET", "/second"),
                               (2, "GET", "/second")]


@pytest.mark.asyncio
@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
async def test_post_on_reused_connection_closed_before_answering_is_not_resent(
    rst: bool
) -> None:
    async with serving(_close_after_reading_second(rst)) as server, client() as pool:
        await within(pool.fetch("127.0.0.1", server.port, "GET", "/first", []))
        with pytest.raises(ConnectionClosed, match="not resent") as caught:
            await within(pool.fetch("127.0.0.1", server.port, "POST", "/second", [], b"{}"))
        assert caught.value.response_started is False
        assert server.seen == [(1, "GET", "/first"), (1, "POST", "/second")]
        assert server.accepted == 1


@pytest.mark.asyncio
async def test_connection_close_response_is_not_reused() -> None:
    first_closed = asyncio.Event()

    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        request = await server.read_request(reader, n)
        assert request is not None
        writer.write(ok(b"bye", b"Connection: close\r\n"))
        await writer.drain()
        await until_eof(reader)  # the server keeps it open: the client must close it
        if n == 1:
            first_closed.set()

    async with serving(handler) as server, client() as pool:
        for _ in range(2):
            assert (await within(pool.fetch("127.0.0.1", server.port, "GET", "/", [])))[2] == (
                b"bye")
        assert server.accepted == 2
        await within(first_closed.wait())


# --- flow control ---------------------------------------------------------------------

@pytest.mark.asyncio
async def test_slow_reader_keeps_buffered_response_bytes_under_high_water() -> None:
    total = 50 * 1024 * 1024
    block = bytes(range(256)) * 4096  # 1 MiB

    def blast(server: ThreadServer, conn: socket.socket, n: int) -> None:
        server.read_request(conn, n)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // len(block)):
            conn.sendall(block)  # as fast as the kernel takes it
        server.may_close.wait(WAIT_S)

    with thread_server(blast) as server:
        async with client() as pool:
            response = await within(pool.request("127.0.0.1", server.port, "GET", "/", []))
            read_size = getattr(response._connection.transport, "max_size", 256 * 1024)
            received, most = 0, 0
            digest = hashlib.sha256()

            async def consume() -> None:
                nonlocal received, most
                async for piece in response:
                    received += len(piece)
                    digest.update(piece)
                    await asyncio.sleep(0.002)  # a slow reader: the server outpaces it
                    most = max(most, response._parser.buffered)

            await within(consume(), 30)
            assert received == total
            assert digest.digest() == hashlib.sha256(block * (total // len(block))).digest()
            assert most > aio.LOW_WATER  # the reader really was slower than the server
            assert most <= HIGH_WATER + read_size


@pytest.mark.asyncio
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_streamed_request_body_to_slow_server_is_flow_controlled(
    chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    total, piece_size = 20 * 1024 * 1024, 256 * 1024

    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        head = await read_head(reader)
        assert head is not None
        raw = bytearray()
        while (len(raw) < total) if not chunked else not raw.endswith(b"\r\n0\r\n\r\n"):
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("upload cut short")
            raw += data
            await asyncio.sleep(0.0005)  # a slow reader
        body = decode_chunked(bytes(raw)) if chunked else bytes(raw)
        writer.write(ok(b"%d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())))
        await writer.drain()
        await until_eof(reader)

    pauses = []
    pause_writing = aio._Connection.pause_writing

    def counting_pause(self: Any) -> None:
        pauses.append(self.transport.get_write_buffer_size())
        pause_writing(self)

    monkeypatch.setattr(aio._Connection, "pause_writing", counting_pause)
    connections: list[Any] = []
    async with serving(handler) as server, client() as pool:
        connect = pool._connect

        async def recording_connect(key: Any, timeout: float) -> Any:
            connections.append(await connect(key, timeout))
            return connections[-1]

        pool._connect = recording_connect  # type: ignore[method-assign]
        sent = hashlib.sha256()
        buffered_at_each_piece = []

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(total // piece_size):
                buffered_at_each_piece.append(connections[0].transport.get_write_buffer_size())
                piece = bytes([i % 256]) * piece_size
                sent.update(piece)
                yield piece

        body = StreamedBody(pieces(), None if chunked else total)
        status, _, answer = await within(
            pool.fetch("127.0.0.1", server.port, "POST", "/upload", [], body), 30)  # type: ignore[arg-type]
        assert status == 200
        assert answer == b"%d %s" % (total, sent.hexdigest().encode())
        assert pauses  # the slow server made the client wait
        high_water = connections[0].transport.get_write_buffer_limits()[1]
        assert max(buffered_at_each_piece) <= high_water


@pytest.mark.asyncio
async def test_early_413_while_uploading_is_returned_and_the_connection_not_reused() -> None:
    declared = 100 * 1024 * 1024
    first_closed = asyncio.Event()

    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        if n == 1:
            head = await read_head(reader)
            assert head is not None
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
            await writer.drain()
            await until_eof(reader)
            first_closed.set()
        else:
            await answer_each(server, reader, writer, n)

    produced = 0

    async def pieces() -> AsyncIterator[bytes]:
        nonlocal produced
        while produced < declared:
            produced += 65536
            yield b"x" * 65536
            await asyncio.sleep(0)  # a producer that waits on its own source

    async with serving(handler) as server, client() as pool:
        status, _, body = await within(pool.fetch(
            "127.0.0.1", server.port, "POST", "/up", [], StreamedBody(pieces(), declared)))  # type: ignore[arg-type]
        assert (status, body) == (413, b"too large")
        assert produced < declared
        await within(first_closed.wait())
        assert (await within(pool.fetch("127.0.0.1", server.port, "GET", "/n", [])))[2] == b"/n"
        assert server.accepted == 2


@pytest.mark.asyncio
async def test_aclose_mid_body_closes_the_connection() -> None:
    closed = asyncio.Event()

    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        if n == 1:
            await server.read_request(reader, n)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"a" * 1024)
            await writer.drain()
            await until_eof(reader)
            closed.set()
        else:
            await answer_each(server, reader, writer, n)

    async with serving(handler) as server, client() as pool:
        response = await within(pool.request("127.0.0.1", server.port, "GET", "/", []))
        body = response.__aiter__()
        assert await within(body.__anext__()) == b"a" * 1024
        await response.aclose()
        await within(closed.wait())  # the server sees the connection end
        await body.aclose()
        assert (await within(pool.fetch("127.0.0.1", server.port, "GET", "/n", [])))[2] == b"/n"
        assert server.accepted == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("finish", ["read", "aclose"])
async def test_connection_paused_by_a_whole_buffered_body_reads_again_once_reused(
    finish: str
) -> None:
    # A body of HIGH_WATER + 1 bytes that the caller has not started to read: the read
    # that completes it also crosses HIGH_WATER, so reading pauses with the body complete.
    size = HIGH_WATER + 1

    async def handler(server: RawServer, reader: Any, writer: Any, n: int) -> None:
        await server.read_request(reader, n)
        writer.write(ok(b"b" * size))
        await answer_each(server, reader, writer, n)

    async with serving(handler) as server, client() as pool:
        response = await within(pool.request("127.0.0.1", server.port, "GET", "/big", []))
        deadline = time.monotonic() + WAIT_S
        while not response.complete:  # the caller is busy elsewhere meanwhile
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)
        if finish == "read":
            assert len(await response.read()) == size
        else:
            await response.aclose()
        answer = await within(pool.fetch("127.0.0.1", server.port, "GET", "/next", [],
                                         timeouts=Timeouts(first_byte=0.5)))
        assert answer[2] == b"/next"
        assert server.accepted == 1
