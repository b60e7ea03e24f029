"""The pure pieces of streamed generator calls: SSE and NDJSON framing, walking generators."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from runpod_flash import CpuLiveServerless, CpuServerlessEndpoint, LiveLoadBalancer, remote
from runpod_flash.build.scanner import scan_file
from runpod_flash.streaming import (
    LineBuffer,
    NDJSONDecoder,
    SSEDecoder,
    SSEEvent,
    Walker,
    aread_items,
    is_generator_function,
    json_text,
    ndjson_line,
    read_items,
    send_stream,
    sse_error,
    sse_event,
)
from runpod_flash.stubs.http_route import _Events
from runpod_flash.stubs.live import _Lines

# -- framing ----------------------------------------------------------------------------------


def test_sse_event_is_one_data_line_per_json_item() -> None:
    assert sse_event(json_text({"token": "a\nb", "n": 1})) == (
        b'data: {"token":"a\\nb","n":1}\n\n'
    )
    assert sse_event("x\ny", "note") == b"event: note\ndata: x\ndata: y\n\n"


def test_sse_error_event_carries_message_and_class_name() -> None:
    assert sse_error(ValueError("bad 7")) == (
        b'event: error\ndata: {"error":"bad 7","error_type":"ValueError"}\n\n'
    )


def test_json_text_refuses_nan_like_json_responses() -> None:
    with pytest.raises(ValueError):
        json_text(float("nan"))


def test_sse_decoder_reassembles_events_split_anywhere() -> None:
    stream = (sse_event(json_text({"i": 1})) + b": comment\nid: 7\nretry: 10\n\n"
              + sse_event("a\nb", "note") + sse_error(KeyError("k")))
    for size in (1, 2, 3, 7, len(stream)):
        decoder = SSEDecoder()
        events: list[SSEEvent] = []
        for start in range(0, len(stream), size):
            events += decoder.feed(stream[start:start + size])
        assert events == [
            SSEEvent("message", '{"i":1}'),
            SSEEvent("note", "a\nb"),
            SSEEvent("error", '{"error":"\'k\'","error_type":"KeyError"}'),
        ], size


def test_sse_decoder_accepts_crlf_and_cr_line_ends() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data:1\r") == []
    assert decoder.feed(b"\n\r\ndata: 2\r\r") == [SSEEvent("message", "1"),
                                                    SSEEvent("message", "2")]


def test_line_buffer_keeps_unfinished_lines() -> None:
    lines = LineBuffer()
    assert lines.feed(b'{"a"') == []
    assert lines.pending
    assert lines.feed(b":1}\n{") == ['{"a":1}']
    assert lines.feed("é}\n".encode()) == ["{é}"]
    assert not lines.pending


def test_ndjson_lines_round_trip_in_pieces() -> None:
    values = [{"item": "x" * 1000}, {"success": True, "result": None}, [1, 2]]
    body = b"".join(ndjson_line(v) for v in values)
    decoder = NDJSONDecoder()
    pieces = [body[start:start + 333] for start in range(0, len(body), 333)]
    decoded = [value for piece in pieces for value in decoder.feed(piece)]
    assert decoded == values


def test_generator_functions_are_recognised() -> None:
    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    async def coro() -> int:
        return 1

    assert is_generator_function(gen) and is_generator_function(agen)
    assert not is_generator_function(coro) and not is_generator_function(len)


# -- readers ----------------------------------------------------------------------------------


class Boom(Exception):
    """A class of the caller's module: an error event names it, the caller gets it back."""


def events_of(*items: Any) -> bytes:
    return b"".join(sse_event(json_text(item)) for item in items)


def test_route_events_become_items_then_the_rebuilt_exception() -> None:
    def func() -> None: ...

    body = events_of(1, {"a": 2}) + sse_error(Boom("mid-stream")) + events_of(3)
    received: list[Any] = []
    with pytest.raises(Boom, match="mid-stream") as raised:
        for item in read_items([body[:5], body[5:]], _Events(func, "svc"), OSError):
            received.append(item)
    assert received == [1, {"a": 2}]
    assert "raised by endpoint svc while streaming" in raised.value.__notes__


def test_unknown_error_class_becomes_remote_execution_error() -> None:
    from runpod_flash import RemoteExecutionError

    body = sse_event(json_text({"error": "gone", "error_type": "NoSuchError"}), "error")
    with pytest.raises(RemoteExecutionError, match="NoSuchError: gone"):
        list(read_items([body], _Events(len, "svc"), OSError))


def test_transport_errors_while_reading_are_translated() -> None:
    def chunks() -> Iterator[bytes]:
        yield events_of(1)
        raise ConnectionResetError("reset")

    items = read_items(chunks(), _Events(len, "svc"), lambda exc: RuntimeError(f"lost: {exc}"))
    assert next(items) == 1
    with pytest.raises(RuntimeError, match="lost: reset"):
        next(items)


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(ndjson_line(line) for line in lines)


def test_live_lines_give_items_output_and_the_return_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from runpod_flash import serialization

    body = ndjson(
        {"item": serialization.encode({1, 2}), "output": [["stdout", "made one\n"]]},
        {"item": serialization.encode("two")},
        {"success": True, "result": serialization.encode(42), "output": [["stderr", "end\n"]]},
    )
    items = read_items([body], _Lines("ep"), OSError)
    assert next(items) == {1, 2}
    assert capsys.readouterr().out == "made one\n"
    assert next(items) == "two"
    with pytest.raises(StopIteration) as stopped:
        next(items)
    assert stopped.value.value == 42
    assert capsys.readouterr().err == "end\n"


def test_live_failure_line_raises_after_the_items_before_it() -> None:
    from runpod_flash import serialization

    body = ndjson(
        {"item": serialization.encode(1)},
        {"success": False, "error": "no", "error_type": "Boom",
         "exception": serialization.encode_exception(Boom("no")), "traceback": "tb", "output": []},
    )
    items = read_items([body], _Lines("ep"), OSError)
    assert next(items) == 1
    with pytest.raises(Boom, match="no"):
        next(items)


def test_live_stream_without_its_last_line_is_an_error() -> None:
    with pytest.raises(ConnectionError, match="ended without the call's result"):
        list(read_items([ndjson({"item": "gA=="})[:0]], _Lines("ep"), OSError))


@pytest.mark.asyncio
async def test_async_reader_yields_the_same_items() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in (events_of(1), events_of(2)[:4], events_of(2)[4:]):
            yield piece

    assert [i async for i in aread_items(chunks(), _Events(len, "svc"), OSError)] == [1, 2]


# -- walking user generators ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_walker_steps_a_sync_generator_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    def gen() -> Iterator[int]:
        yield threading.get_ident()
        yield threading.get_ident()
        return 7

    walker = Walker(gen())
    threads = [t async for t in walker]
    assert len(threads) == 2 and loop_thread not in threads
    assert walker.value == 7


@pytest.mark.asyncio
async def test_walker_close_waits_for_a_running_step_then_closes_the_generator() -> None:
    release = threading.Event()
    closed = threading.Event()

    def gen() -> Iterator[int]:
        try:
            yield 1
            release.wait(5)
            yield 2
        finally:
            closed.set()

    walker = Walker(gen())
    assert await walker.__anext__() == 1
    step = asyncio.ensure_future(walker.__anext__())
    await asyncio.sleep(0)
    step.cancel()  # the consumer goes away while the generator runs in its thread
    with pytest.raises(asyncio.CancelledError):
        await step
    closing = asyncio.ensure_future(walker.aclose())
    release.set()
    await asyncio.wait_for(closing, 5)
    assert closed.is_set()


@pytest.mark.asyncio
async def test_walker_closes_an_async_generator_with_generator_exit() -> None:
    seen: list[str] = []

    async def agen() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        except GeneratorExit:
            seen.append("exit")
            raise

    walker = Walker(agen())
    assert await walker.__anext__() == 1
    await walker.aclose()
    assert seen == ["exit"]


# -- sending a body as it is produced ---------------------------------------------------------


@pytest.mark.asyncio
async def test_send_stream_sends_each_chunk_then_ends_the_body() -> None:
    sent: list[dict[str, Any]] = []
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    await asyncio.wait_for(send_stream(receive, send, 200, [], chunks()), 5)
    assert [m.get("body") for m in sent] == [None, b"a", b"b", b""]
    assert sent[-1]["more_body"] is False


@pytest.mark.asyncio
async def test_send_stream_stops_and_closes_the_body_when_the_client_leaves() -> None:
    gone = asyncio.Event()
    closed = asyncio.Event()
    sent: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message.get("body"):
            sent.append(message["body"])
            gone.set()  # the client leaves after the first piece

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # a generator waiting for its next item
            yield b"never"
        finally:
            closed.set()

    await asyncio.wait_for(send_stream(receive, send, 200, [], chunks()), 5)
    assert sent == [b"first"]
    assert closed.is_set()


# -- decoration and build ---------------------------------------------------------------------


def test_generator_on_a_live_queue_resource_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="only on load-balanced resources"):
        @remote(CpuLiveServerless(name="qb-gen"))
        def numbers() -> Iterator[int]:
            yield 1


def test_generator_on_a_deployed_queue_resource_keeps_its_list_output() -> None:
    @remote(CpuServerlessEndpoint(name="qb-gen-deployed"))
    def numbers() -> Iterator[int]:
        yield 1

    assert numbers.streams is False


def test_generator_on_a_load_balancer_streams_and_checks_arguments_at_call() -> None:
    @remote(LiveLoadBalancer(name="lb-gen"), method="POST", path="/numbers")
    async def numbers(n: int) -> AsyncIterator[int]:
        yield n

    assert numbers.streams is True
    with pytest.raises(TypeError):
        numbers(1, 2)  # wrong arguments fail at the call, as a local generator's do


def test_scanner_marks_generator_functions(tmp_path: Path) -> None:
    (tmp_path / "gens.py").write_text(
        "from runpod_flash import remote, LiveLoadBalancer\n"
        "api = LiveLoadBalancer(name='g')\n"
        "@remote(api, method='GET', path='/a')\n"
        "def plain():\n"
        "    def inner():\n"
        "        yield 1\n"
        "    return list(inner()) + [x for x in range(3)]\n"
        "@remote(api, method='GET', path='/b')\n"
        "def gen():\n"
        "    if True:\n"
        "        yield from range(3)\n"
        "@remote(api, method='GET', path='/c')\n"
        "async def agen():\n"
        "    x = yield 1\n"
    )
    functions = scan_file(tmp_path, "gens.py").functions
    scanned = {f.name: (f.is_async, f.is_generator) for f in functions}
    assert scanned == {"plain": (False, False), "gen": (False, True), "agen": (True, True)}


def test_manifest_entry_names_generator_functions(tmp_path: Path) -> None:
    from runpod_flash.build.manifest import _function_entry

    fn = next(f for f in _scan_one(tmp_path) if f.name == "gen")

    class Live:
        method, path = "GET", "/b"

        class resource:
            is_load_balanced = True

    entry = _function_entry(fn, Live)  # type: ignore[arg-type]
    assert entry["is_generator"] is True
    assert json.loads(json.dumps(entry))["http_path"] == "/b"


def _scan_one(tmp_path: Path) -> list[Any]:
    (tmp_path / "one.py").write_text(
        "from runpod_flash import remote, LiveLoadBalancer\n"
        "@remote(LiveLoadBalancer(name='g'), method='GET', path='/b')\n"
        "def gen():\n"
        "    yield 1\n"
    )
    return scan_file(tmp_path, "one.py").functions


# -- nothing is sent before iteration starts --------------------------------------------------


def test_deployed_generator_call_sends_nothing_until_iterated() -> None:
    from runpod_flash import CpuLoadBalancerSlsResource
    from runpod_flash.stubs import http_route

    resource = CpuLoadBalancerSlsResource(name="never-deployed-gen")

    def numbers(n: int) -> Iterator[int]:
        yield n

    items = http_route.stream(resource, numbers, ("POST", "/numbers"), (1,), {})
    with pytest.raises(ValueError, match="may not be deployed"):  # the lookup is the first I/O
        next(items)
    with pytest.raises(TypeError, match="cannot be sent as JSON"):  # checked at the call
        http_route.stream(resource, numbers, ("POST", "/numbers"), ({1},), {})


def test_live_generator_call_sends_nothing_until_iterated() -> None:
    from runpod_flash.stubs import live

    looked_up: list[str] = []

    class Endpoint:
        name = "lazy"

        def target(self) -> Any:
            looked_up.append("target")
            raise ConnectionError("no platform in this test")

    def numbers() -> Iterator[int]:
        yield 1

    items = live.stream(Endpoint(), lambda: ("code", "hash"), "numbers", __name__, None, (), {})
    assert looked_up == []
    with pytest.raises(ConnectionError):
        next(items)
    assert looked_up == ["target"]


@pytest.mark.asyncio
async def test_async_deployed_generator_over_https_steps_the_blocking_client() -> None:
    from runpod_flash import CpuLoadBalancerSlsResource
    from runpod_flash.stubs import http_route

    resource = CpuLoadBalancerSlsResource(name="tls-gen")
    resource.endpoint_url = "https://127.0.0.1:1"  # nothing listens: the connect fails

    async def numbers() -> AsyncIterator[int]:
        yield 1

    items = http_route.astream(resource, numbers, ("GET", "/numbers"), (), {})
    with pytest.raises(ConnectionError, match="Failed to connect to endpoint tls-gen"):
        await asyncio.wait_for(items.__anext__(), 10)
