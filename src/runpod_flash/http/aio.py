"""The asyncio HTTP/1.1 client: pooled kept-alive connections, streaming both ways.

Used on the gateway's hop to workers (every proxied request), by `async def` live calls and
by queue workers. It is a small asyncio protocol around httptools instead of a general
client because this hop is on every request: measured, an aiohttp hop cost ~0.3 ms here,
this one a fraction of that. What a general client guarantees, it does too, and the
conformance suite (tests/integration/test_http_conformance.py, tests/unit/test_http_*.py)
proves it: interim 1xx responses skipped, HEAD/204/304 without bodies, a pooled connection
checked before reuse, a failed reused connection retried only for idempotent methods,
timeouts on connect, first byte and idle, and flow control in both directions.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import NamedTuple

from runpod_flash.http.errors import (
    BodyTooLarge,
    ConnectFailed,
    ConnectionClosed,
    HttpError,
    ResponseTimeout,
)
from runpod_flash.http.headers import Headers
from runpod_flash.http.parse import IDEMPOTENT, LAST_CHUNK, ResponseParser, chunk, request_head

HIGH_WATER = 512 * 1024  # response bytes buffered before reading from the server pauses
LOW_WATER = 128 * 1024
KEEPALIVE_EXPIRY_S = 300.0  # well under the servers' keep-alive, so they never close first
MAX_IDLE_PER_HOST = 256


class Timeouts(NamedTuple):
    """Seconds; None waits for ever."""

    connect: float = 10.0
    first_byte: float | None = None  # request sent -> response head
    idle: float | None = None  # between body chunks


NO_TIMEOUTS = Timeouts()


class StreamedBody(NamedTuple):
    """A request body sent as it is produced: `length` bytes, or chunked when None."""

    chunks: AsyncIterable[bytes]
    length: int | None = None


Body = bytes | StreamedBody


class _Connection(asyncio.Protocol):
    """One connection; carries one exchange at a time and wakes its waiter on progress."""

    __slots__ = (
        "_drained",
        "_poll",
        "_reading_paused",
        "_waiter",
        "_write_paused",
        "authority",
        "closed",
        "error",
        "idle_since",
        "key",
        "listener",
        "parser",
        "request_sent",
        "spare",
        "transport",
    )

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.authority = f"{key[0]}:{key[1]}".encode("latin-1")
        self.transport: asyncio.Transport | None = None
        # Called on every bit of progress instead of waking a waiter: lets a caller drive
        # an exchange from callbacks alone (the gateway's fast lane).
        self.listener: Callable[[], None] | None = None
        self.parser: ResponseParser | None = None  # the exchange's; None while idle
        self.spare: ResponseParser | None = None  # the last one, reused by the next exchange
        self.error: HttpError | None = None
        self.closed = False
        self.idle_since = 0.0
        self.request_sent = False
        self._poll: select.poll | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # bytes on an idle connection: nothing can be trusted on it
            self.abort()
            return
        try:
            parser.feed(data)
        except HttpError as exc:
            self._fail(exc)
            self.abort()
            return
        if parser.buffered > HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        if self.parser is not None:
            try:
                self.parser.feed_eof()
            except HttpError as exc:
                self._fail(exc)
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser = self.parser
        if parser is not None and not parser.complete and self.error is None:
            self._fail(ConnectionClosed(
                f"server closed the connection ({exc or 'end of stream'})",
                response_started=parser.started,
            ))
        self._set_drained()
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._set_drained()

    # the exchange
    def _wake(self) -> None:
        if self.listener is not None:
            self.listener()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: HttpError) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _set_drained(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def drain(self) -> None:
        """Wait while the server reads slower than we write."""
        if self._write_paused and not self.closed:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    async def progress(self, timeout: float | None, what: str) -> None:
        """Wait for more response bytes, the end, or an error (raised)."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(
            timeout, self._expire, waiter, f"no {what} within {timeout:g}s"
        )
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    def _expire(self, waiter: asyncio.Future[None], message: str) -> None:
        if not waiter.done():
            self._fail(ResponseTimeout(message))

    def consumed(self, parser: ResponseParser) -> None:
        """The caller took buffered body bytes: read from the server again if we paused."""
        if self._reading_paused and parser.buffered < LOW_WATER and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()

    def next_parser(self, head_request: bool) -> ResponseParser:
        """The parser of a new exchange (the last one's, when it can carry on)."""
        spare = self.spare
        self.parser = spare.reuse(head_request) if spare is not None else \
            ResponseParser(head_request)
        self.request_sent = False
        return self.parser

    def resume(self) -> None:
        """Read again if a whole, large body made us pause before it was taken."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def reusable(self) -> bool:
        parser = self.parser
        return (
            parser is not None and parser.complete and parser.keep_alive
            and self.request_sent and not self.closed and self.error is None
            and self.transport is not None and not self.transport.is_closing()
        )

    def still_open(self, now: float) -> bool:
        """Checked before reuse: closed, expired or readable-while-idle connections are not."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if now - self.idle_since > KEEPALIVE_EXPIRY_S:
            return False
        # The event loop may not have seen a close that arrived while idle: an idle
        # connection the server has written to (a FIN included) is not safe to use.
        if self._poll is None:
            sock = self.transport.get_extra_info("socket")
            if sock is None:
                return False
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)
        return not self._poll.poll(0)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """A response whose head has arrived; its body is read or streamed, then released.

    Always end with `read()`, a full iteration, or `aclose()`: that returns the connection
    to the pool (when the exchange ended cleanly) or closes it.
    """

    __slots__ = ("_connection", "_done", "_idle", "_parser", "_pool", "headers", "status")

    def __init__(
        self, pool: ConnectionPool, connection: _Connection, parser: ResponseParser,
        idle_timeout: float | None,
    ) -> None:
        self.status = parser.status
        self.headers = parser.headers
        self._pool = pool
        self._connection = connection
        self._parser = parser
        self._idle = idle_timeout
        self._done = False

    @property
    def complete(self) -> bool:
        """The whole body has arrived (it may still be buffered)."""
        return self._parser.complete

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body; BodyTooLarge (connection closed) past `max_bytes`."""
        parser = self._parser
        if parser.complete:  # the common case: it all came with the head
            body = parser.take()
            self._release()
            if max_bytes is not None and len(body) > max_bytes:
                raise BodyTooLarge(f"response body over {max_bytes} bytes")
            return body
        pieces = []
        size = 0
        async for piece in self:
            size += len(piece)
            if max_bytes is not None and size > max_bytes:
                await self.aclose()
                raise BodyTooLarge(f"response body over {max_bytes} bytes")
            pieces.append(piece)
        return b"".join(pieces)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; ResponseTimeout when the server pauses too long."""
        parser, connection = self._parser, self._connection
        try:
            while True:
                if parser.chunks:
                    data = parser.take()
                    connection.consumed(parser)
                    yield data
                elif parser.complete:
                    break
                else:
                    await connection.progress(self._idle, "response bytes")
        except BaseException:
            self._close()
            raise
        self._release()

    async def aclose(self) -> None:
        """Stop reading: the connection is closed unless the body had all arrived."""
        if self._parser.complete:
            self._parser.take()
            self._release()
        else:
            self._close()

    def abort(self) -> None:
        """Close the connection now (the caller went away); a waiting reader gets an error."""
        self._connection._fail(ConnectionClosed("request aborted", response_started=True))
        self._close()

    def _release(self) -> None:
        if not self._done:
            self._done = True
            self._pool.checkin(self._connection)

    def _close(self) -> None:
        if not self._done:
            self._done = True
            self._connection.abort()


class ConnectionPool:
    """Idle connections per (host, port), reused across requests; one event loop only."""

    def __init__(self, max_idle_per_host: int = MAX_IDLE_PER_HOST) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_host

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        headers: Headers,
        body: Body = b"",
        timeouts: Timeouts = NO_TIMEOUTS,
    ) -> Response:
        """Send a request; returns once the final response head has arrived.

        Raises ConnectFailed (nothing sent), ConnectionClosed, ProtocolError or
        ResponseTimeout. A reused connection that fails before any response byte is retried
        on a new one only for idempotent methods with a body we still hold: a POST is never
        sent twice.
        """
        key = (host, port)
        retry_allowed = method in IDEMPOTENT and isinstance(body, bytes)
        while True:
            connection = self.checkout(host, port)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(key, timeouts.connect)
            parser = connection.next_parser(method == "HEAD")
            try:
                await _send(connection, parser, method, target, headers, body)
                while not parser.head_complete:
                    await connection.progress(timeouts.first_byte, "response")
            except ConnectionClosed as exc:
                connection.abort()
                if reused and retry_allowed and not exc.response_started:
                    continue
                if reused and not exc.response_started:
                    raise ConnectionClosed(
                        f"{exc}; a kept-alive connection to {host}:{port} closed before "
                        f"answering, and a {method} is not resent because it may have run"
                    ) from None
                raise
            except BaseException:
                connection.abort()
                raise
            return Response(self, connection, parser, timeouts.idle)

    async def fetch(
        self, host: str, port: int, method: str, target: str, headers: Headers,
        body: bytes = b"", timeouts: Timeouts = NO_TIMEOUTS,
    ) -> tuple[int, Headers, bytes]:
        """A whole exchange: (status, headers, body)."""
        response = await self.request(host, port, method, target, headers, body, timeouts)
        return response.status, response.headers, await response.read()

    def checkout(self, host: str, port: int) -> _Connection | None:
        """An idle connection that is still open (checked), or None."""
        idle = self._idle.get((host, port))
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.still_open(now):
                return connection
            connection.abort()
        return None

    def checkin(self, connection: _Connection) -> None:
        """Back to the pool if the exchange ended cleanly, else closed."""
        if not connection.reusable():
            connection.abort()
            return
        connection.spare, connection.parser = connection.parser, None
        connection.idle_since = time.monotonic()
        connection.resume()
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self._max_idle:
            connection.abort()
        else:
            idle.append(connection)

    @staticmethod
    async def _connect(key: tuple[str, int], timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(key), *key), timeout
            )
        except asyncio.TimeoutError:
            raise ConnectFailed(f"connect to {key[0]}:{key[1]} timed out after {timeout:g}s") \
                from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {key[0]}:{key[1]}: {exc}") from None
        return connection

    def forget(self, host: str, port: int) -> None:
        """Close the idle connections of a server that is gone."""
        for connection in self._idle.pop((host, port), []):
            connection.abort()

    def close(self) -> None:
        for host, port in list(self._idle):
            self.forget(host, port)


async def _send(
    connection: _Connection, parser: ResponseParser, method: str, target: str,
    headers: Headers, body: Body,
) -> None:
    """Write the request; a streamed body stops early if the server answers or goes away."""
    transport = connection.transport
    assert transport is not None
    if isinstance(body, bytes):
        head = request_head(method, target, connection.authority, headers, len(body))
        transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            transport.write(body)
        connection.request_sent = True
        return
    chunked = body.length is None
    transport.write(request_head(method, target, connection.authority, headers, body.length))
    sent = 0
    async for piece in body.chunks:
        if connection.closed or connection.error is not None or parser.head_complete:
            return  # answered early or gone: the connection is not reused (request unsent)
        sent += len(piece)
        transport.write(chunk(piece) if chunked else piece)
        await connection.drain()
    if body.length is not None and sent != body.length:
        raise ConnectionClosed(f"request body was {sent} bytes, not the {body.length} declared")
    if chunked:
        transport.write(LAST_CHUNK)
    connection.request_sent = True
