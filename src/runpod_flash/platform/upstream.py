"""Kept-alive HTTP/1.1 connections: gateway to workers, and the SDK's asyncio calls.

The gateway's hop is on every request, so it is a thin asyncio protocol with httptools'
parser (the one uvicorn uses) instead of a general client: measured, an aiohttp hop cost
~0.3 ms per request here, this one a fraction of that.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import httptools

Headers = list[tuple[bytes, bytes]]


class UpstreamClosed(ConnectionError):
    """The worker closed the connection before the response was complete."""


class _Connection(asyncio.Protocol):
    """One connection to a worker; carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: asyncio.Future[tuple[int, Headers, bytes]] | None = None
        self._headers: Headers = []
        self._body: list[bytes] = []
        self.reusable = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            self._fail(UpstreamClosed(f"invalid response from worker: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._fail(UpstreamClosed("worker closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.reusable = False
        if self._response is not None and not self._response.done():
            self._response.set_result(
                (self._parser.get_status_code(), self._headers, b"".join(self._body))
            )

    def _fail(self, exc: Exception) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_exception(exc)

    async def send(self, head: bytes, body: bytes) -> tuple[int, Headers, bytes]:
        assert self.transport is not None
        self._headers, self._body = [], []
        self._response = asyncio.get_running_loop().create_future()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        try:
            return await self._response
        finally:
            self._response = None


def _request_head(
    method: str, target: str, host: str, port: int, headers: Headers, length: int
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}:{port}\r\n".encode("latin-1")]
    lines.extend(name + b": " + value + b"\r\n" for name, value in headers)
    lines.append(b"content-length: %d\r\n\r\n" % length)
    return b"".join(lines)


class UpstreamPool:
    """Idle connections per (host, port), reused across requests; one event loop only."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = defaultdict(list)

    async def request(
        self, host: str, port: int, method: str, target: str, headers: Headers, body: bytes
    ) -> tuple[int, Headers, bytes]:
        """Send one request; raises ConnectionError subclasses.

        ConnectionRefusedError means nothing was sent; UpstreamClosed means the server
        went away while the request was in its hands.
        """
        idle = self._idle[(host, port)]
        connection = idle.pop() if idle else None
        if connection is None or connection.transport is None or \
                connection.transport.is_closing():
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, host, port
            )
        head = _request_head(method, target, host, port, headers, len(body))
        try:
            response = await connection.send(head, body)
        except BaseException:
            if connection.transport is not None:
                connection.transport.close()
            raise
        if connection.reusable:
            idle.append(connection)
        elif connection.transport is not None:
            connection.transport.close()
        return response

    def forget(self, host: str, port: int) -> None:
        """Close the idle connections of a server that is gone."""
        for connection in self._idle.pop((host, port), []):
            if connection.transport is not None:
                connection.transport.close()

    def close(self) -> None:
        for host, port in list(self._idle):
            self.forget(host, port)
