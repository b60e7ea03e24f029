"""How a generator function's items travel: SSE from deployed routes, NDJSON from live calls.

Deployed load-balanced routes answer `text/event-stream`, one event per item (`data: <JSON>`)
and a last `event: error` if the generator raises, so curl and browsers read them too; live
`/execute` answers `application/x-ndjson`, one object per line ending with the same result
object a plain call returns. The worker runtime encodes and sends them, the SDK stubs decode
them: both import this module (and it imports neither), so the two ends cannot drift apart.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
_EOL = re.compile(rb"\r\n|\r|\n")


def is_generator_function(func: Any) -> bool:
    """`def f(): yield` or `async def f(): yield`: its calls stream items instead of returning."""
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


# -- encoding (worker side) -------------------------------------------------------------------


def json_text(value: Any) -> str:
    """Compact JSON on one line (strings' newlines are escaped), as JSONResponse writes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def sse_event(data: str, event: str | None = None) -> bytes:
    """One server-sent event; each line of `data` becomes its own `data:` field."""
    lines = [f"event: {event}"] if event else []
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def sse_error(exc: BaseException) -> bytes:
    """The event that ends a stream whose generator raised (the body of a plain call's 500)."""
    return sse_event(json_text({"error": str(exc), "error_type": type(exc).__name__}), "error")


def ndjson_line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


# -- decoding (SDK side) ----------------------------------------------------------------------


class LineBuffer:
    """Splits a body that arrives in arbitrary pieces into complete lines (CRLF, CR or LF)."""

    def __init__(self) -> None:
        self._partial: list[bytes] = []
        self._after_cr = False  # a CR ended the last piece: a LF starting the next is its pair

    def feed(self, data: bytes) -> list[str]:
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]
        self._after_cr = False
        if not _EOL.search(data):  # the common case for a large item: no line ends yet
            if data:
                self._partial.append(data)
            return []
        buffer = b"".join([*self._partial, data])
        self._partial.clear()
        lines, start = [], 0
        for match in _EOL.finditer(buffer):
            lines.append(buffer[start:match.start()].decode(errors="replace"))
            start = match.end()
        if buffer.endswith(b"\r"):
            self._after_cr = True
        if start < len(buffer):
            self._partial.append(buffer[start:])
        return lines

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished line are buffered."""
        return bool(self._partial)


class SSEEvent(NamedTuple):
    event: str  # "message" unless the event names itself
    data: str


class SSEDecoder:
    """Server-sent events from body bytes, per the HTML living standard's parsing rules
    (comments and `id`/`retry` fields are ignored; an event without data is not dispatched)."""

    def __init__(self) -> None:
        self._lines = LineBuffer()
        self._event = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[SSEEvent]:
        events = []
        for line in self._lines.feed(data):
            if not line:
                if self._data:
                    events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return events


class NDJSONDecoder:
    """JSON values from newline-delimited JSON body bytes."""

    def __init__(self) -> None:
        self._lines = LineBuffer()

    def feed(self, data: bytes) -> list[Any]:
        return [json.loads(line) for line in self._lines.feed(data) if line.strip()]


class ItemReader(Protocol):
    """Turns a streamed body into items: what each stub knows about its format's events."""

    def feed(self, data: bytes) -> Iterator[Any]:
        """The items in `data`, in order; raises the remote error where the body reports one."""

    def finish(self) -> Any:
        """At the end of the body: the generator's return value, or raise if it ended badly."""


def read_items(
    chunks: Iterable[bytes], reader: ItemReader, transport_error: Callable[[OSError], Exception]
) -> Generator[Any, None, Any]:
    """Items of a body read with the blocking client; its errors become `transport_error`'s."""
    pieces = iter(chunks)
    while True:
        try:
            piece = next(pieces, None)
        except OSError as exc:
            raise transport_error(exc) from None
        if piece is None:
            return reader.finish()
        yield from reader.feed(piece)


async def aread_items(
    chunks: AsyncIterable[bytes], reader: ItemReader,
    transport_error: Callable[[OSError], Exception],
) -> AsyncIterator[Any]:
    """`read_items` for a body read with the asyncio client."""
    pieces = aiter(chunks)
    while True:
        try:
            piece = await anext(pieces, None)
        except OSError as exc:
            raise transport_error(exc) from None
        if piece is None:
            reader.finish()
            return
        for item in reader.feed(piece):
            yield item


# -- walking a user's generator and sending its body (worker side) ----------------------------


def _advance(items: Iterator[Any]) -> tuple[bool, Any]:
    """(finished, item or return value): one step of a sync generator, run in a thread."""
    try:
        return False, next(items)
    except StopIteration as stop:
        return True, stop.value


class Walker:
    """A user generator stepped from the event loop, and always closed at the end.

    An async generator runs in place. A sync one advances one item per call into the thread
    pool (anyio's, the one Starlette runs sync routes in), so a slow producer never blocks
    the loop. A generator cannot be closed while it runs, so when the walk stops during a
    step (the client left), `aclose` waits for that step before closing it, in a thread too:
    its `finally:` may block.
    """

    def __init__(self, items: Iterator[Any] | AsyncIterator[Any]) -> None:
        self._items = items
        self._step: asyncio.Task[tuple[bool, Any]] | None = None
        self.value: Any = None  # a sync generator's `return` value, once it finished

    def __aiter__(self) -> Walker:
        return self

    async def __anext__(self) -> Any:
        items = self._items
        if isinstance(items, AsyncIterator):
            return await items.__anext__()
        self._step = asyncio.ensure_future(_in_thread(_advance, items))
        finished, value = await asyncio.shield(self._step)  # a cancel leaves the step running
        if finished:
            self.value = value
            raise StopAsyncIteration
        return value

    async def aclose(self) -> None:
        items = self._items
        if isinstance(items, AsyncIterator):
            await items.aclose()  # type: ignore[attr-defined]
            return
        step = self._step
        if step is not None and not step.done():
            await asyncio.wait({step})
        if step is not None and step.done() and not step.cancelled():
            step.exception()  # retrieved: it was reported already, or nobody is left to tell
        await _in_thread(items.close)  # type: ignore[attr-defined]


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """`func(*args)` in anyio's worker threads, with this context (the output capture)."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(func, *args)


async def send_stream(
    receive: Any, send: Any, status: int, headers: list[tuple[bytes, bytes]],
    chunks: AsyncIterator[bytes],
) -> None:
    """Send a response whose body is `chunks`, each as soon as it is produced (chunked).

    The body is pumped in its own task while another waits for the client to disconnect;
    a disconnect cancels the pump. Either way the pump closes `chunks` (an async generator
    whose `finally:` closes the user's generator) in its own task, where it ran.
    """
    await send({"type": "http.response.start", "status": status, "headers": headers})

    async def pump() -> None:
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        pumping.cancel()  # no-op once it finished
        await asyncio.wait({pumping, watching})
    if not pumping.cancelled() and pumping.exception() is not None:
        raise pumping.exception()  # type: ignore[misc]  # a failed send, not the generator
