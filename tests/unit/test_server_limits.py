"""The HTTP servers' limits (LimitedHttpProtocol) over real sockets, on an in-process uvicorn
with small limits; and who may reach the platform at all (FrontDoor)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from runpod_flash.http.server_limits import LimitedHttpProtocol, ServerLimits
from runpod_flash.platform.app import FrontDoor

LIMITS = ServerLimits(max_head_bytes=4096, head_timeout_s=0.25, keep_alive_s=0.4,
                      max_connections=6)
WAIT_S = 3.0  # every read is bounded: far more than any answer here takes


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers `ok`; `/slow` after a while (a busy connection)."""
    if scope["path"] == "/slow":
        await asyncio.sleep(0.4)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[uvicorn.Server]:
    """One server for the module; each test waits for the last one's connections to go."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="error", lifespan="off", timeout_keep_alive=LIMITS.keep_alive_s,
        http=LimitedHttpProtocol.bound(LIMITS)))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    server.port = sock.getsockname()[1]  # type: ignore[attr-defined]
    yield server
    server.should_exit = server.force_exit = True  # no graceful wait for the test's clients
    await asyncio.wait_for(serving, WAIT_S)


@pytest_asyncio.fixture(loop_scope="module")
async def port(server: uvicorn.Server) -> int:
    for _ in range(int(WAIT_S / 0.01)):
        if not server.server_state.connections:
            break
        await asyncio.sleep(0.01)
    return int(server.port)  # type: ignore[attr-defined]


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    @classmethod
    async def kept_alive(cls, port: int) -> Client:
        """A connection kept alive after one request answered."""
        client = await cls.connect(port)
        await client.send(request())
        assert await client.answer() == (200, b"ok")
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, bytes]:
        """The status and body of the next response."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT_S)
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":")[1]) for line in lines
                      if line.lower().startswith("content-length:"))
        body = await asyncio.wait_for(self.reader.readexactly(length), WAIT_S)
        return int(lines[0].split()[1]), body

    async def closed(self, within: float) -> bool:
        """Whether the server closes the connection (EOF) within `within` seconds."""
        try:
            return await asyncio.wait_for(self.reader.read(), within) == b""
        except asyncio.TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


def request(target: str = "/", extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (target.encode(), extra)


def header(size: int) -> bytes:
    return b"x-big: " + b"a" * size + b"\r\n"


# -- head size --------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_a_head_within_the_limit_is_served_in_one_read_or_many(port: int) -> None:
    client = await Client.connect(port)
    data = request(extra=header(3500))
    await client.send(data)
    assert await client.answer() == (200, b"ok")
    for start in range(0, len(data), 700):  # the same head, in pieces
        await client.send(data[start:start + 700])
        await asyncio.sleep(0.005)
    assert await client.answer() == (200, b"ok")
    client.close()


@pytest.mark.parametrize("pieces", [1, 2, 40])
@pytest.mark.asyncio(loop_scope="module")
async def test_a_head_over_the_limit_is_431_however_it_arrives(port: int, pieces: int) -> None:
    client = await Client.connect(port)
    data = request(extra=header(5000))
    step = -(-len(data) // pieces)
    for start in range(0, len(data), step):
        await client.send(data[start:start + step])
        await asyncio.sleep(0.005)
    status, body = await client.answer()
    assert status == 431 and b"FLASH_MAX_HEADER_KB" in body
    assert await client.closed(within=WAIT_S)
    client.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_an_endless_header_is_refused_before_it_ends_and_the_client_reads_why(
        port: int) -> None:
    client = await Client.connect(port)
    await client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nx-big: ")
    with contextlib.suppress(ConnectionError):  # the server stops reading after LINGER_S
        for _ in range(64):  # 4 MiB of one header, never finished
            await client.send(b"a" * 65536)
    status, _ = await client.answer()
    assert status == 431
    client.close()


# -- time -------------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_a_connection_that_sends_nothing_is_closed_without_a_word(port: int) -> None:
    client = await Client.connect(port)
    assert await asyncio.wait_for(client.reader.read(), WAIT_S) == b""


@pytest.mark.asyncio(loop_scope="module")
async def test_a_head_that_does_not_arrive_in_time_is_408(port: int) -> None:
    client = await Client.connect(port)
    await client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for _ in range(3):  # a byte now and then does not extend the deadline
        await asyncio.sleep(0.06)
        await client.send(b"x-drip: 1\r\n")
    status, body = await client.answer()
    assert status == 408 and b"FLASH_HEADER_TIMEOUT" in body
    assert await client.closed(within=WAIT_S)


@pytest.mark.asyncio(loop_scope="module")
async def test_an_idle_kept_alive_connection_closes_after_the_keep_alive_timeout(
        port: int) -> None:
    client = await Client.kept_alive(port)
    assert not await client.closed(within=LIMITS.keep_alive_s * 0.6)  # kept alive a while
    assert await client.closed(within=LIMITS.keep_alive_s + 0.5)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_next_request_on_a_kept_alive_connection_has_the_head_timeout(
        port: int) -> None:
    client = await Client.kept_alive(port)
    await client.send(b"GET / HTTP/1.1\r\n")  # begun, never finished
    assert (await client.answer())[0] == 408


@pytest.mark.asyncio(loop_scope="module")
async def test_blank_lines_dripped_on_a_kept_alive_connection_do_not_keep_it_open(
        port: int) -> None:
    """Bytes that begin no request have a head's time, and a drip does not extend it."""
    client = await Client.kept_alive(port)
    deadline = asyncio.get_running_loop().time() + 5 * (LIMITS.keep_alive_s + 0.5)
    while not await client.closed(within=0.06):
        assert asyncio.get_running_loop().time() < deadline, "blank lines kept it open"
        with contextlib.suppress(ConnectionError):
            await client.send(b"\r\n")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_head_begun_behind_a_slow_request_is_due_once_that_is_answered(
        port: int) -> None:
    """The next head's time starts when the connection is free again, so a slow request
    (longer than the head timeout) is never cut off by the head pipelined behind it."""
    client = await Client.connect(port)
    await client.send(request("/slow") + b"GET / HTTP/1.1\r\n")
    assert await client.answer() == (200, b"ok")
    assert (await client.answer())[0] == 408


@pytest.mark.asyncio(loop_scope="module")
async def test_pipelined_requests_are_still_answered_in_order(port: int) -> None:
    client = await Client.connect(port)
    await client.send(request("/a") + request("/b") + request("/c"))
    for _ in range(3):
        assert await client.answer() == (200, b"ok")
    client.close()


# -- connections ------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_past_the_connection_limit_the_longest_waiting_connection_makes_room(
        port: int) -> None:
    idle = [await Client.connect(port) for _ in range(LIMITS.max_connections)]
    await asyncio.sleep(0.05)
    newcomer = await Client.connect(port)
    await newcomer.send(request())
    assert await newcomer.answer() == (200, b"ok")
    assert await idle[0].closed(within=WAIT_S), "the oldest idle connection was kept"
    assert not await idle[-1].closed(within=0.05)
    for client in (*idle, newcomer):
        client.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_when_every_connection_is_busy_a_new_one_is_503(port: int) -> None:
    busy = [await Client.connect(port) for _ in range(LIMITS.max_connections)]
    for client in busy:
        await client.send(request("/slow"))
    await asyncio.sleep(0.1)
    refused = await Client.connect(port)
    status, body = await refused.answer()
    assert status == 503 and b"FLASH_MAX_CONNECTIONS" in body
    for client in busy:
        assert await client.answer() == (200, b"ok")
        client.close()


# -- the platform's front door ----------------------------------------------------------------


DOOR = FrontDoor(7770)


@pytest.mark.parametrize("host", [
    b"127.0.0.1", b"127.0.0.1:7770", b"localhost:7770", b"LOCALHOST:7770", b"[::1]:7770", None,
])
def test_the_platform_answers_to_its_own_names(host: bytes | None) -> None:
    headers = [(b"host", host)] if host is not None else []
    assert DOOR.refusal(headers) is None


@pytest.mark.parametrize("host", [b"evil.example:7770", b"evil.example", b"127.0.0.1.nip.io"])
def test_another_name_is_421_naming_the_setting(host: bytes) -> None:
    status, message = DOOR.refusal([(b"host", host)]) or (0, "")
    assert status == 421 and f"FLASH_ALLOWED_HOSTS={host.decode()}" in message


@pytest.mark.parametrize("origin", [b"http://127.0.0.1:7770", b"http://localhost:7770"])
def test_the_platform_s_own_origin_is_allowed(origin: bytes) -> None:
    assert DOOR.refusal([(b"host", b"127.0.0.1:7770"), (b"origin", origin)]) is None


@pytest.mark.parametrize("origin", [b"http://evil.example", b"null", b"http://127.0.0.1:8080"])
def test_a_cross_origin_request_is_403_naming_the_setting(origin: bytes) -> None:
    status, message = DOOR.refusal([(b"host", b"127.0.0.1:7770"), (b"origin", origin)]) \
        or (0, "")
    assert status == 403 and "FLASH_ALLOWED_ORIGINS" in message


def test_more_names_and_origins_are_allowed_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_ALLOWED_HOSTS", "flash.internal:443, proxy.local")
    monkeypatch.setenv("FLASH_ALLOWED_ORIGINS", "https://app.example")
    door = FrontDoor.from_env("http://127.0.0.1:7770")
    assert door.refusal([(b"host", b"flash.internal:443")]) is None
    # a page served under an allowed name is that name's own origin
    assert door.refusal([(b"host", b"proxy.local"), (b"origin", b"https://proxy.local")]) is None
    assert door.refusal([(b"host", b"proxy.local"), (b"origin", b"https://app.example")]) is None
    assert door.refusal([(b"host", b"other.example")]) is not None
    monkeypatch.setenv("FLASH_ALLOWED_HOSTS", "*")
    monkeypatch.setenv("FLASH_ALLOWED_ORIGINS", "*")
    door = FrontDoor.from_env("http://127.0.0.1:7770")
    assert door.refusal([(b"host", b"any.example"), (b"origin", b"http://any")]) is None


def test_a_platform_on_a_machine_address_answers_to_that_address_only() -> None:
    door = FrontDoor.from_env("http://10.0.0.5:7770")
    assert door.refusal([(b"host", b"10.0.0.5:7770")]) is None
    assert door.refusal([(b"host", b"10.0.0.5:7770"), (b"origin", b"http://10.0.0.5:7770")]) \
        is None
    assert door.refusal([(b"host", b"127.0.0.1:7770")]) is None  # loopback still works
    assert door.refusal([(b"host", b"evil.example")]) is not None


def test_limits_come_from_the_environment_and_a_bad_value_names_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_MAX_HEADER_KB", "8")
    monkeypatch.setenv("FLASH_HEADER_TIMEOUT", "2.5")
    monkeypatch.setenv("FLASH_MAX_CONNECTIONS", "100")
    limits = ServerLimits.from_env()
    assert (limits.max_head_bytes, limits.head_timeout_s, limits.max_connections) == \
        (8192, 2.5, 100)
    monkeypatch.setenv("FLASH_HEADER_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="FLASH_HEADER_TIMEOUT"):
        ServerLimits.from_env()


class _Transport:
    """What uvicorn's protocol asks of a transport when a connection is made."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default)

    def is_closing(self) -> bool:
        return False


@pytest.mark.asyncio
async def test_the_asgi_scope_made_on_demand_is_the_one_uvicorn_makes() -> None:
    """The protocol skips uvicorn's `on_message_begin` (the fast lane needs no scope); the
    scope it makes for the ASGI app must stay what uvicorn's would be."""
    config = Config(app=lambda *_: None, http="httptools", lifespan="off")
    config.load()
    protocol = LimitedHttpProtocol.bound(LIMITS)(config=config, server_state=ServerState(),
                                                 app_state={"shared": 1})
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    HttpToolsProtocol.on_message_begin(protocol)
    assert protocol.asgi_scope() == protocol.scope
