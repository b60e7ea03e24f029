"""The gateway's decisions, one at a time: request bodies, retries, response headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runpod_flash.asgi import ClientDisconnected
from runpod_flash.http.errors import (
    ConnectFailed,
    ConnectionClosed,
    ProtocolError,
    ResponseTimeout,
)
from runpod_flash.http.headers import HOP_BY_HOP, end_to_end, rendered_end_to_end
from runpod_flash.platform import gateway
from runpod_flash.platform.gateway import (
    MAX_BODY_BYTES,
    VIA,
    BodyOverLimit,
    _Upload,
    failure_reply,
    relay,
    retry_elsewhere,
)


def receiver(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def body(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


async def collect(upload: _Upload) -> bytes:
    return b"".join([piece async for piece in upload])


# -- request bodies ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_upload_yields_the_body_and_reports_its_end_once() -> None:
    ends: list[int] = []
    upload = _Upload(b"ab", receiver(body(b""), body(b"cd"), body(b"e", False)),
                     lambda: ends.append(1))
    assert await collect(upload) == b"abcde"
    assert upload.finished and ends == [1]


@pytest.mark.asyncio
async def test_a_client_leaving_mid_body_is_never_an_end_of_body() -> None:
    upload = _Upload(b"ab", receiver(body(b"cd"), {"type": "http.disconnect"}), lambda: None)
    with pytest.raises(ClientDisconnected):
        await collect(upload)
    assert not upload.finished


@pytest.mark.asyncio
async def test_a_streamed_body_over_the_limit_stops() -> None:
    big = b"x" * (MAX_BODY_BYTES // 2 + 1)
    upload = _Upload(big, receiver(body(big), body(b"", False)), lambda: None)
    with pytest.raises(BodyOverLimit):
        await collect(upload)


@pytest.mark.asyncio
async def test_discarding_the_rest_reads_to_the_end() -> None:
    ends: list[int] = []
    receive = receiver(body(b"b"), body(b"c"), body(b"d", False))
    upload = _Upload(b"a", receive, lambda: ends.append(1))
    iterator = upload.__aiter__()
    assert await iterator.__anext__() == b"a"  # the worker answered after the first piece
    await upload.discard_rest()
    assert upload.finished and ends == [1]


# -- retries and failures ---------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "method", "replayable", "expected"), [
    (ConnectFailed("refused"), "POST", False, True),  # nothing was sent
    (ConnectionClosed("gone", response_started=False), "GET", True, True),
    (ConnectionClosed("gone", response_started=False), "PUT", True, True),
    (ConnectionClosed("gone", response_started=False), "POST", True, False),  # may have run
    (ConnectionClosed("gone", response_started=False), "GET", False, False),  # body consumed
    (ConnectionClosed("gone", response_started=True), "GET", True, False),  # half answered
    (ResponseTimeout("slow"), "GET", True, False),  # still running there
    (ProtocolError("junk"), "GET", True, False),
])
def test_retry_elsewhere_only_when_it_cannot_run_twice(
    exc: Any, method: str, replayable: bool, expected: bool
) -> None:
    assert retry_elsewhere(exc, method, replayable) is expected


def test_failure_replies_name_the_worker_and_the_cause() -> None:
    assert failure_reply("w-1", "GET", ResponseTimeout("no response within 1s"))[0] == 504
    status, message = failure_reply("w-1", "POST", ConnectionClosed("reset"))
    assert status == 502 and "w-1" in message and "may have run" in message
    assert failure_reply("w-1", "GET", ConnectFailed("refused"))[0] == 502
    assert "invalid HTTP" in failure_reply("w-1", "GET", ProtocolError("junk"))[1]


# -- response headers -------------------------------------------------------------------------


def test_end_to_end_drops_hop_by_hop_and_connection_named_headers() -> None:
    headers = [(b"connection", b"close, x-private"), (b"x-private", b"1"), (b"keep-alive", b"5"),
               (b"transfer-encoding", b"chunked"), (b"x-kept", b"2"), (b"upgrade", b"h2c"),
               (b"date", b"today")]
    assert end_to_end(headers, frozenset({b"date"})) == [(b"x-kept", b"2")]


NAMES = st.sampled_from([b"connection", b"keep-alive", b"transfer-encoding", b"host",
                         b"authorization", b"x-flash-gateway-secret", b"x-private",
                         b"content-type", b"close", b"te"])
VALUES = st.sampled_from([b"keep-alive", b"close", b"x-private", b"close, x-private", b"1"])


@given(headers=st.lists(st.tuples(NAMES, VALUES), max_size=8),
       drop=st.sampled_from([frozenset(), frozenset({b"authorization"}),
                             frozenset({b"x-flash-gateway-secret"})]))
def test_one_pass_rendering_is_end_to_end_or_defers_to_it(
    headers: list[tuple[bytes, bytes]], drop: frozenset[bytes]
) -> None:
    """The fast lane's one-pass rendering writes exactly `end_to_end`'s headers, or says
    it cannot (a `Connection` header naming more than keep-alive)."""
    lines = rendered_end_to_end(headers, HOP_BY_HOP | drop)
    names_more = any(name == b"connection" and value != b"keep-alive"
                     for name, value in headers)
    assert (lines is None) == names_more
    if lines is not None:
        assert lines == b"".join(b"%b: %b\r\n" % h for h in end_to_end(headers, drop))


class FakeResponse:
    """What `_relay` reads of a worker's response (the real one needs a worker)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], chunks: list[bytes],
                 complete: bool) -> None:
        self.status, self.headers, self.complete = status, headers, complete
        self._chunks = chunks
        self.closed = False

    async def read(self) -> bytes:
        return b"".join(self._chunks)

    async def aclose(self) -> None:
        self.closed = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._chunks:
            yield piece


class Watch:
    started = False

    def now(self) -> None:
        self.started = True


async def run_relay(response: FakeResponse, method: str = "GET") -> tuple[list[Any], Watch]:
    sent: list[Any] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    watch = Watch()
    assert await relay(response, method, send, watch) == response.status  # type: ignore[arg-type]
    return sent, watch


@pytest.mark.asyncio
async def test_relay_replaces_date_and_server_and_adds_via() -> None:
    sent, _ = await run_relay(FakeResponse(200, [(b"date", b"x"), (b"server", b"uvicorn"),
                                             (b"content-length", b"2")], [b"ok"], True))
    headers = sent[0]["headers"]
    assert VIA in headers and (b"content-length", b"2") in headers
    assert not any(name in (b"date", b"server") for name, _ in headers)
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}


@pytest.mark.asyncio
async def test_relay_streams_a_chunked_response_and_watches_the_client() -> None:
    chunks = [b"one", b"two"]
    sent, watch = await run_relay(
        FakeResponse(200, [(b"transfer-encoding", b"chunked")], chunks, False))
    assert watch.started
    assert not any(name == b"content-length" for name, _ in sent[0]["headers"])
    assert [m["body"] for m in sent[1:]] == [b"one", b"two", b""]
    assert [m.get("more_body", False) for m in sent[1:]] == [True, True, False]


@pytest.mark.asyncio
async def test_relay_keeps_a_head_answers_length_but_sends_no_body() -> None:
    response = FakeResponse(200, [(b"content-length", b"1234")], [], True)
    sent, _ = await run_relay(response, "HEAD")
    assert (b"content-length", b"1234") in sent[0]["headers"] and sent[1]["body"] == b""
    assert response.closed


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.asyncio
async def test_relay_sends_bodiless_statuses_without_length(status: int) -> None:
    sent, _ = await run_relay(FakeResponse(status, [(b"content-length", b"10")], [], True))
    assert not any(name == b"content-length" for name, _ in sent[0]["headers"])


class Endpoint:
    def __init__(self, timeout_ms: int) -> None:
        self.spec = {"executionTimeoutMs": timeout_ms}


def test_first_byte_timeout_is_the_execution_timeout_or_the_default() -> None:
    assert gateway.response_timeout(Endpoint(0)) == gateway.RESPONSE_TIMEOUT_S  # type: ignore[arg-type]
    assert gateway.response_timeout(Endpoint(1500)) == 1.5  # type: ignore[arg-type]
