"""The fast lane's memo of request heads: the gateway's own protocol, served on a real socket
in front of a real HTTP worker (fleet_fakes' server, echoing), with the real supervisor and
gateway.

A head seen before skips the parser; these tests hold that nothing else changes: each
request keeps its own body, the platform is asked afresh each time, and bytes that are not
a whole request between requests (part of a body, a split head, a pipelined follower) go
through the parser as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from fleet_fakes import (
    FakeProvider,
    PingServer,
    declared_length,
    make_endpoint,
    platform,
    ready,
    until,
)
from uvicorn.config import Config
from uvicorn.server import ServerState

from runpod_flash.http.memo import HeadMemo
from runpod_flash.http.server_limits import ServerLimits
from runpod_flash.platform.app import FrontDoor
from runpod_flash.platform.fastlane import GatewayProtocol, LaneRequest
from runpod_flash.platform.gateway import Gateway
from runpod_flash.platform.metrics import Metrics
from runpod_flash.platform.store import Store
from runpod_flash.platform.supervisor import Supervisor

IO_TIMEOUT_S = 5.0


@dataclass
class Lane:
    """The gateway's protocol on a port of its own, with one ready worker behind it."""

    port: int
    protocol: type[GatewayProtocol]
    worker: PingServer  # answering "echo"
    supervisor: Supervisor
    state: ServerState

    @property
    def memo(self) -> HeadMemo[LaneRequest]:
        return self.protocol.memo

    async def reading_a_body(self, reading: bool = True) -> None:
        """Until the (one) client connection's parser is inside a request, or is not: so
        that what the test sends next comes in a read of its own."""
        def matches() -> bool:
            return any(connection._message_open is reading  # type: ignore[attr-defined]
                       for connection in self.state.connections)
        await until(matches)


@contextlib.asynccontextmanager
async def lane_server(store: Store) -> AsyncIterator[Lane]:
    async with PingServer() as worker, platform(store, FakeProvider()) as supervisor:
        worker.status = "echo"
        endpoint = make_endpoint(supervisor.fleet, type="LB")
        await ready(supervisor, endpoint, worker)
        gateway = Gateway(supervisor, "platform-token", None, Metrics(supervisor, lambda _: 0))
        protocol = GatewayProtocol.for_gateway(gateway, FrontDoor(8000), ServerLimits())
        config = Config(app=gateway, http="httptools", lifespan="off", log_level="warning")
        config.load()
        state = ServerState()
        server = await asyncio.get_running_loop().create_server(
            lambda: protocol(config=config, server_state=state, app_state={}),
            "127.0.0.1", 0)
        try:
            yield Lane(server.sockets[0].getsockname()[1], protocol, worker, supervisor, state)
        finally:
            server.close()
            for connection in list(state.connections):
                connection.shutdown()
            gateway.close()


class Client:
    """One kept-alive client connection; answers are read by their Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
        body = await asyncio.wait_for(self.reader.readexactly(declared_length(head)), IO_TIMEOUT_S)
        return int(head.split(b" ", 2)[1]), body


@contextlib.asynccontextmanager
async def client(lane: Lane) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()


def post(length: int, path: bytes = b"/ep/ep/echo") -> bytes:
    return b"POST %b HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: %d\r\n\r\n" % (
        path, length)


GET = b"GET /ep/ep/hello HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"


async def warmed(lane: Lane, conn: Client, head: bytes, body: bytes = b"") -> None:
    """The head remembered: the first request pools the worker connection (ASGI path), the
    second is parsed by the lane and remembered."""
    for _ in range(2):
        await conn.send(head + body)
        assert await conn.answer() == (200, body)
    assert lane.memo.get(head) is not None


@pytest.mark.asyncio
async def test_a_repeated_head_is_parsed_once_and_each_request_keeps_its_own_body(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with lane_server(store) as lane, client(lane) as conn:
        head = post(8)
        await warmed(lane, conn, head, b"warm-up!")
        parsed: list[LaneRequest | None] = []
        parse = lane.protocol._lane_request
        monkeypatch.setattr(lane.protocol, "_lane_request",
                            lambda self: parsed.append(parse(self)) or parsed[-1])
        bodies = [b"body-%03d" % n for n in range(5)]
        for body in bodies:
            await conn.send(head + body)
            assert await conn.answer() == (200, body)
        assert parsed == []  # none went through the parser's callbacks
        assert [body for _, body in lane.worker.requests()[-5:]] == bodies
        assert all(seen.startswith(b"POST /echo HTTP/1.1\r\n") and b"via: 1.1 openflash" in seen
                   for seen, _ in lane.worker.requests()[-5:])


@pytest.mark.asyncio
async def test_the_platform_is_asked_afresh_for_a_remembered_head(store: Store) -> None:
    async with lane_server(store) as lane, client(lane) as conn:
        await warmed(lane, conn, GET)
        forwarded = len(lane.worker.requests())
        del lane.supervisor.endpoints["ep"]  # undeployed meanwhile
        await conn.send(GET)
        status, body = await conn.answer()
        assert status == 404 and b"not found" in body
        assert len(lane.worker.requests()) == forwarded


@pytest.mark.asyncio
async def test_a_remembered_head_with_part_of_its_body_waits_for_the_rest(
    store: Store
) -> None:
    async with lane_server(store) as lane, client(lane) as conn:
        head = post(10)
        await warmed(lane, conn, head, b"0123456789")
        await conn.send(head + b"abcd")
        await lane.reading_a_body()
        await conn.send(b"efghij")
        assert await conn.answer() == (200, b"abcdefghij")


@pytest.mark.asyncio
async def test_a_remembered_head_with_a_request_pipelined_behind_it(store: Store) -> None:
    async with lane_server(store) as lane, client(lane) as conn:
        head = post(3)
        await warmed(lane, conn, head, b"one")
        await conn.send(head + b"two" + head + b"333")
        assert [await conn.answer(), await conn.answer()] == [(200, b"two"), (200, b"333")]
        assert [body for _, body in lane.worker.requests()[-2:]] == [b"two", b"333"]


@pytest.mark.asyncio
async def test_a_remembered_head_inside_a_body_is_body(store: Store) -> None:
    """Bytes equal to a remembered head, arriving as the rest of a body the gateway answered
    early (a 404 before reading it), are read as that body, never as a request."""
    smuggled = b"GET /ep/ep/smuggled HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
    async with lane_server(store) as lane, client(lane) as conn:
        await warmed(lane, conn, smuggled)
        forwarded = len(lane.worker.requests())
        await conn.send(post(len(smuggled), b"/ep/nowhere/x"))
        assert (await conn.answer())[0] == 404
        await conn.send(smuggled)  # the body of that POST
        await lane.reading_a_body(False)
        await conn.send(GET)
        assert await conn.answer() == (200, b"")
        assert [head.split(b"\r\n")[0] for head, _ in lane.worker.requests()[forwarded:]] == \
            [b"GET /hello HTTP/1.1"]


@pytest.mark.asyncio
async def test_a_head_that_came_in_pieces_is_not_remembered(store: Store) -> None:
    async with lane_server(store) as lane, client(lane) as conn:
        head = post(2)
        for _ in range(3):
            await conn.send(head[:20])
            await lane.reading_a_body()
            await conn.send(head[20:] + b"ok")
            assert await conn.answer() == (200, b"ok")
        assert len(lane.memo) == 0


def test_the_memo_is_bounded_in_entries_and_in_head_size() -> None:
    memo = HeadMemo[LaneRequest]()
    request = LaneRequest(b"/ep/e/x", [], "GET", "/x", "/x", "e", None, None, None, True, 0)
    memo.add(b"x" * (HeadMemo.MAX_HEAD_BYTES + 1), request)
    assert len(memo) == 0
    for n in range(HeadMemo.MAX_ENTRIES):
        memo.add(b"%d" % n, request)
    assert len(memo) == HeadMemo.MAX_ENTRIES
    memo.add(b"one more", request)
    assert len(memo) == 1 and memo.get(b"one more") is request


def test_a_requests_rendered_headers_are_rendered_once_per_set_of_dropped_names() -> None:
    headers = [(b"host", b"a"), (b"x-one", b"1"), (b"authorization", b"Bearer t")]
    request = LaneRequest(b"/ep/e/x", headers, "GET", "/x", "/x", "e", b"a", None,
                          b"Bearer t", True, 0)
    drop_auth = frozenset({b"host", b"authorization"})
    keep_auth = frozenset({b"host"})
    assert request.lines(drop_auth) == b"x-one: 1\r\n"
    assert request.lines(keep_auth) == b"x-one: 1\r\nauthorization: Bearer t\r\n"
    headers.append((b"x-late", b"2"))  # (never done: shows the first rendering is kept)
    assert request.lines(drop_auth) == b"x-one: 1\r\n"
