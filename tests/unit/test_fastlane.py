"""The fast lane: its deadline sweep (what replaces a timer per request and per idle
connection), and its one-pass rendering of a whole answer."""

from __future__ import annotations

import asyncio

import h11
import pytest

from runpod_flash.platform.fastlane import Deadlines, _whole_response
from runpod_flash.platform.gateway import relayed_headers


@pytest.mark.asyncio
async def test_a_deadline_fires_once_after_its_time_and_a_discarded_one_never() -> None:
    deadlines = Deadlines()
    fired: list[str] = []
    done = asyncio.Event()
    deadlines.add("due", 0.05, lambda: (fired.append("due"), done.set()))
    deadlines.add("kept", 0.05, lambda: fired.append("kept"))
    deadlines.add("later", 60, lambda: fired.append("later"))
    deadlines.discard("kept")
    await asyncio.wait_for(done.wait(), timeout=5)
    assert fired == ["due"]
    deadlines.discard("later")


@pytest.mark.asyncio
async def test_the_sweep_stops_when_nothing_is_due_and_rearms_on_the_next_deadline() -> None:
    deadlines = Deadlines()
    first, second = asyncio.Event(), asyncio.Event()
    deadlines.add("a", 0.01, first.set)
    await asyncio.wait_for(first.wait(), timeout=5)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while deadlines._armed and loop.time() < deadline:  # the sweep ends with no deadlines
        await asyncio.sleep(0.02)
    assert not deadlines._armed
    deadlines.add("b", 0.01, second.set)
    await asyncio.wait_for(second.wait(), timeout=5)


@pytest.mark.asyncio
async def test_re_adding_a_key_moves_its_deadline() -> None:
    deadlines = Deadlines()
    deadlines.add("conn", 0.01, lambda: None)
    deadlines.add("conn", 60, lambda: None)  # the connection was used again: a new deadline
    due, _ = deadlines._due["conn"]
    assert due > asyncio.get_running_loop().time() + 30 and len(deadlines._due) == 1
    deadlines.discard("conn")


UPSTREAM_HEADERS = [
    [(b"content-type", b"application/json"), (b"content-length", b"2")],
    [(b"date", b"Mon, 30 Nov 2026 19:00:00 GMT"), (b"server", b"uvicorn"),
     (b"content-length", b"2"), (b"x-trace", b"1")],
    [(b"keep-alive", b"timeout=5"), (b"transfer-encoding", b"chunked"), (b"x-a", b"b")],
    [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
]


@pytest.mark.parametrize("headers", UPSTREAM_HEADERS)
@pytest.mark.parametrize("status", [200, 204, 304, 404])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("keep_alive", [True, False])
def test_the_lanes_one_pass_answer_follows_the_relay_rules(
    headers: list[tuple[bytes, bytes]], status: int, method: str, keep_alive: bool
) -> None:
    """The fast lane renders a whole answer in one pass; what a client parses from it is
    what `relayed_headers` (the general relay's rules) says, with the body when one is due."""
    body = b"" if status in (204, 304) else b"ok"
    server_lines = b"date: Mon, 30 Nov 2026 20:00:00 GMT\r\nserver: uvicorn\r\n"
    rendered = _whole_response(status, method, headers, body, keep_alive, server_lines)
    assert rendered is not None
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(rendered)
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == status
    received, data = list(response.headers), b""
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data)
        data += event.data
    expected = relayed_headers(status, method, headers, len(body))
    if not keep_alive:
        expected = [*expected, (b"connection", b"close")]
    assert received == [(b"date", b"Mon, 30 Nov 2026 20:00:00 GMT"), (b"server", b"uvicorn"),
                        *expected]
    assert data == (b"" if method == "HEAD" else body)
    assert client.next_event() is h11.NEED_DATA  # nothing after the answer


def test_a_worker_naming_headers_in_connection_takes_the_general_path() -> None:
    headers = [(b"connection", b"x-private"), (b"x-private", b"1"), (b"content-length", b"0")]
    assert _whole_response(200, "GET", headers, b"", True, b"") is None
