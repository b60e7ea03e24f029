"""The gateway's common case, outside ASGI: a small proxied request to a warm worker.

uvicorn's per-request machinery (scope, request cycle, a task, `receive`/`send`) costs more
CPU than the whole proxy hop. This protocol is uvicorn's own httptools protocol, bounded
(http.server_limits), with one change: a request for `/ep/...` that needs nothing special
(a ready worker with an idle kept-alive connection, a small body with a Content-Length, no
`Expect`, no upgrade, a `Host` and `Origin` the platform's front door lets in) is
forwarded from the parser's callbacks, and the worker's answer written back from the
worker connection's, with no task at all. Everything else (cold starts, waiting for a
worker, streamed or large uploads, `Expect: 100-continue`, errors, pipelined requests) goes
through the ASGI gateway as before; a streamed answer or a retry continues in a task with
the ASGI gateway's own code. The conformance suite runs every case through this class.

The lane applies the ASGI gateway's header rules (`gateway.not_forwarded`,
`gateway.relayed_headers`) but renders each head in one pass over the headers
(`headers.rendered_end_to_end`, `_whole_response`), without the intermediate lists: the
lane's Python is about half of the gateway's CPU per request (benchmarks/lb_gateway.py
reports that CPU beside nginx's). Unit tests hold the renderings equal to the general rules.

A client on a kept-alive connection usually sends the same head every time. What the lane
takes from a head depends on its bytes alone (`LaneRequest`), so a head that arrives whole
with its whole body in one read, between requests, is looked up by its bytes (`HeadMemo`)
instead of going through the parser's callbacks again; the platform's state (endpoint,
credentials, workers) is consulted afresh for each request. That halves the lane's work
before a request is on its way to the worker (in-process: ~18 -> ~10 us), which is what a
client waiting on one request at a time sees.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from runpod_flash.http.aio import Response
from runpod_flash.http.errors import ConnectionClosed, HttpError, ResponseTimeout
from runpod_flash.http.headers import HOP_BY_HOP, Headers, content_length, rendered_end_to_end
from runpod_flash.http.memo import HeadMemo
from runpod_flash.http.parse import ResponseParser, request_head
from runpod_flash.http.server_limits import Deadlines, LimitedHttpProtocol, ServerLimits
from runpod_flash.platform import gateway as gw
from runpod_flash.platform.app import FrontDoor
from runpod_flash.platform.endpoints import Endpoint, Worker

# Larger bodies stream through the ASGI gateway (which also refuses those over the limit).
FAST_BODY_LIMIT = min(256 * 1024, gw.MAX_BODY_BYTES)
_FAST_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"})
_FALL_BACK = frozenset({b"expect", b"transfer-encoding", b"upgrade"})
# The headers `_open_exchange` looks at (the rest pass through untouched).
_NOTED = _FALL_BACK | {b"content-length", b"host", b"origin", b"authorization"}
_NOT_RELAYED = HOP_BY_HOP | gw.PLATFORM_WRITES  # the worker's headers the client never gets
_VIA_LINE = b"%b: %b\r\n" % gw.VIA

_rendered: tuple[list[tuple[bytes, bytes]], bytes] = ([], b"")


def _server_headers(defaults: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's Date and Server lines, rendered once per second (when uvicorn renews them)."""
    global _rendered
    if _rendered[0] is not defaults:
        _rendered = (defaults, b"".join(b"%b: %b\r\n" % header for header in defaults))
    return _rendered[1]


def _whole_response(
    status: int, method: str, upstream: Headers, body: bytes, keep_alive: bool,
    server_lines: bytes,
) -> bytes | None:
    """`gateway.relayed_headers` and the body, rendered in one pass (the lane's hot path);
    None when the worker's `Connection` header names more headers to drop."""
    parts = [STATUS_LINE[status], server_lines]
    declared = None
    for name, value in upstream:
        if name in _NOT_RELAYED:
            if name == b"content-length":
                declared = value
            elif name == b"connection":
                return None
            continue
        parts += (name, b": ", value, b"\r\n")
    parts.append(_VIA_LINE)
    if status in (204, 304):
        parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        return b"".join(parts)
    if method == "HEAD":  # the length a GET would have had (if the worker said), no body
        if declared is not None and declared.isdigit():
            parts.append(b"content-length: %b\r\n" % declared)
        body = b""
    else:
        parts.append(b"content-length: %d\r\n" % len(body))
    parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
    parts.append(body)
    return b"".join(parts)


def _small(parser: ResponseParser) -> bool:
    """A body with a declared length small enough to collect before answering."""
    length = content_length(parser.headers)
    return length is not None and length <= FAST_BODY_LIMIT


class _NoEvent:
    """uvicorn signals a request cycle's event on disconnect; an exchange needs none."""

    def set(self) -> None:
        pass


class _LaneWatch:
    """The ASGI gateway's client watch, for an exchange: the protocol sees the disconnect
    itself (connection_lost) and cancels the exchange's task."""

    gone = False

    def arm(self) -> None:
        pass

    def now(self) -> None:
        pass

    def stop(self) -> None:
        pass


_LANE_WATCH = _LaneWatch()  # stateless: one serves every exchange


@dataclass(slots=True)
class LaneRequest:
    """What the lane takes from a request's head: a function of the head's bytes alone
    (the platform's state is consulted afresh for every request, in `_exchange_for`), so
    one parse serves every later request with the same head (`http.memo.HeadMemo`)."""

    url: bytes
    headers: Headers
    method: str
    target: str
    path: str
    endpoint_id: str
    host: bytes | None
    origin: bytes | None
    authorization: bytes | None
    keep_alive: bool
    length: int
    # `rendered_end_to_end(headers, skip)` for each `skip` asked for (two at most:
    # gateway.not_forwarded's sets)
    rendered: dict[frozenset[bytes], bytes | None] = field(default_factory=dict)

    def lines(self, skip: frozenset[bytes]) -> bytes | None:
        rendered = self.rendered.get(skip, False)
        if rendered is False:
            rendered = self.rendered[skip] = rendered_end_to_end(self.headers, skip)
        return rendered  # type: ignore[return-value]


class Exchange:
    """One proxied request in flight; stands in for uvicorn's request cycle meanwhile, so
    uvicorn queues pipelined requests behind it and shuts the connection down after it."""

    message_event = _NoEvent()
    __slots__ = (
        "_chunked", "authorization", "body", "client_headers", "connection", "disconnected",
        "endpoint", "keep_alive", "lane", "method", "not_forwarded", "parser", "path",
        "request", "response_complete", "started", "target", "task", "watch", "worker",
    )

    def __init__(
        self, lane: GatewayProtocol, request: LaneRequest, endpoint: Endpoint, worker: Worker,
        connection: Any,
    ) -> None:
        self.lane = lane
        self.request = request
        self.endpoint = endpoint
        self.worker = worker
        self.connection = connection
        self.method = request.method
        self.target = request.target
        self.path = request.path
        self.client_headers = request.headers
        self.authorization = authorization = request.authorization
        self.not_forwarded = lane.gateway.not_forwarded(endpoint, authorization)
        self.keep_alive = request.keep_alive
        self.body: list[bytes] = []
        self.response_complete = False
        self.disconnected = False
        self.parser: ResponseParser | None = None
        self.task: asyncio.Task[None] | None = None
        self.watch = _LANE_WATCH
        self.started = time.perf_counter()
        self._chunked = False

    # the request, from the client's parser
    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        """The request is whole: send it on the kept-alive connection to the worker."""
        connection = self.connection
        body = b"".join(self.body)
        lines = self.request.lines(self.not_forwarded)
        if lines is None:  # `Connection` names more headers to drop
            head = request_head(self.method, self.target, connection.authority,
                                gw.with_secret(self._forwarded(), self.worker), len(body))
        else:
            head = request_head(self.method, self.target, connection.authority, [],
                                len(body), lines + _VIA_LINE + self.worker.secret_line)
        connection.transport.write(head + body)
        # The request is on its way; the rest is ready long before the answer can be read
        # (the event loop reads it after this callback returns).
        self.parser = connection.next_parser(self.method == "HEAD")
        connection.request_sent = True
        connection.listener = self._progress
        self.lane.deadlines.add(self, gw.response_timeout(self.endpoint), self.expire)

    # the response, from the worker connection's parser
    def _progress(self) -> None:
        parser, connection = self.parser, self.connection
        assert parser is not None
        if connection.error is not None:
            self._failed(connection.error)
        elif parser.complete:
            self._stop_timer()
            self._write_whole(parser)
        elif parser.head_complete and not _small(parser):
            # A streamed (or large) answer: the ASGI gateway's relay, in a task.
            self._stop_timer()
            connection.listener = None
            response = Response(self.lane.gateway.upstream, connection, parser,
                                gw.IDLE_TIMEOUT_S)
            self._continue(gw.relay(response, self.method, self.send, self.watch))
        # else: more of the head, or of a small body (workers often write the head and
        # the body apart), is on its way

    def _forwarded(self) -> Headers:
        return self.lane.gateway.forward_headers(self.endpoint, self.client_headers,
                                                 self.authorization)

    def expire(self) -> None:
        """The first-byte deadline passed (`Deadlines` calls this)."""
        self.connection._fail(ResponseTimeout(
            f"no response within {gw.response_timeout(self.endpoint):g}s"))

    def _stop_timer(self) -> None:
        self.lane.deadlines.discard(self)

    def _failed(self, exc: HttpError) -> None:
        """Before any answer: retried through the ASGI gateway where that is safe (it
        opens a new connection), else answered here."""
        self._stop_timer()
        self.connection.listener = None
        self.connection.abort()
        gateway = self.lane.gateway
        if not isinstance(exc, ResponseTimeout):
            gateway.supervisor.health.suspect(self.worker)
        if gw.retry_elsewhere(exc, self.method, replayable=True) and isinstance(
                exc, ConnectionClosed):
            gateway.supervisor.router.release(self.worker)
            self.worker = None  # type: ignore[assignment]  # the retry acquires its own
            self._continue(gateway.forward(
                self.endpoint, self.method, self.target, self._forwarded(), b"".join(self.body),
                None, None, self.send, self.watch,
            ))
            return
        self._continue(gw.reply(self.send, *gw.failure_reply(self.worker.id, self.method, exc)))

    def _write_whole(self, parser: ResponseParser) -> None:
        """The common case: the whole answer came with its head; one write, no task."""
        body = parser.take()
        status = parser.status
        lane = self.lane
        whole = _whole_response(status, self.method, parser.headers, body, self.keep_alive,
                                _server_headers(lane.server_state.default_headers))
        if whole is None:  # the worker named headers in `Connection`: the general rules
            self._write_head(status, gw.relayed_headers(status, self.method, parser.headers,
                                                        len(body)), body)
        else:
            lane.transport.write(whole)
        # The client has its answer; the bookkeeping comes after.
        self.connection.listener = None
        self.lane.gateway.upstream.checkin(self.connection)
        self._finish(status)

    # writing the answer
    def _write_head(self, status: int, headers: Headers, body: bytes = b"") -> None:
        lane = self.lane
        parts = [STATUS_LINE[status], _server_headers(lane.server_state.default_headers)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        bodiless = self.method == "HEAD" or status in (204, 304)
        if not bodiless and not any(name == b"content-length" for name, _ in headers):
            self._chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if not bodiless:
            parts.append(body)
        lane.transport.write(b"".join(parts))

    async def send(self, message: dict[str, Any]) -> None:
        """ASGI `send` for the ASGI gateway's code run on this exchange's behalf."""
        lane = self.lane
        if self.disconnected:
            return
        if message["type"] == "http.response.start":
            self._write_head(message["status"], list(message.get("headers", ())))
            return
        data = message.get("body", b"")
        if self.method != "HEAD":
            if self._chunked:
                lane.transport.write(
                    (b"%x\r\n%b\r\n" % (len(data), data) if data else b"")
                    + (b"" if message.get("more_body") else b"0\r\n\r\n"))
            elif data:
                lane.transport.write(data)
        if lane.flow.write_paused:
            await lane.flow.drain()

    def _continue(self, work: Any) -> None:
        """Finish in a task (a streamed answer, a retry, an error reply)."""
        self.task = asyncio.get_running_loop().create_task(self._run(work))

    async def _run(self, work: Any) -> None:
        try:
            status = await work
        except gw.BrokenOff:
            status = 502
            self.lane.transport.close()  # the client sees the truncation
        except asyncio.CancelledError:
            status = gw.CLIENT_GONE
        except Exception:
            gw.logger.exception("proxying %s %s failed", self.method, self.path)
            status = 500
            self.lane.transport.close()
        self._finish(status)

    def _finish(self, status: int) -> None:
        self.response_complete = True
        lane = self.lane
        lane.exchange = None
        if self.worker is not None:
            lane.gateway.supervisor.router.release(self.worker)
        lane.gateway.record(self.endpoint, self.method, self.path, status, self.started)
        if not self.keep_alive:
            lane.transport.close()
        if not self.disconnected:
            lane.on_response_complete()  # uvicorn: pipelined requests, keep-alive timer

    def client_gone(self) -> None:
        """The client closed its connection: so is the worker's (the worker sees it)."""
        self.disconnected = True
        self._stop_timer()
        if self.task is not None:
            self.task.cancel()
            return
        if not self.response_complete:
            self.connection.listener = None
            self.connection.abort()
            self._finish(gw.CLIENT_GONE)


class GatewayProtocol(LimitedHttpProtocol):
    """uvicorn's HTTP/1.1 protocol, bounded (LimitedHttpProtocol), with the fast lane for
    plain proxied requests."""

    gateway: gw.Gateway  # set by `for_gateway`
    front_door: FrontDoor
    deadlines: Deadlines
    memo: HeadMemo[LaneRequest]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchange: Exchange | None = None
        self._head_read: tuple[bytes, int] | None = None  # the read being parsed, its head's end

    @classmethod
    def for_gateway(
        cls, gateway: gw.Gateway, front_door: FrontDoor, limits: ServerLimits
    ) -> type[GatewayProtocol]:
        return cls.bound(limits, gateway=gateway, front_door=front_door,  # type: ignore[return-value]
                         memo=HeadMemo[LaneRequest]())

    def data_received(self, data: bytes) -> None:
        """A head seen before, whole in this read with its whole body, between requests:
        straight to the lane; anything else, or a request the lane does not take now, to
        the parser."""
        if self.between_requests:
            end = data.find(b"\r\n\r\n") + 4
            if 3 < end <= HeadMemo.MAX_HEAD_BYTES:  # (a longer one is never remembered)
                request = self.memo.get(data[:end])
                if request is not None and len(data) - end == request.length and \
                        self._take_remembered(request, data[end:]):
                    return
                self._head_read = (data, end)
        try:
            super().data_received(data)
        finally:
            self._head_read = None

    def _take_remembered(self, request: LaneRequest, body: bytes) -> bool:
        """What the parser's callbacks would have done for this request, without them."""
        exchange = self._exchange_for(request)
        if exchange is None:
            return False
        self.begin_parsed(request.url, request.headers)
        self.exchange = exchange
        self.cycle = exchange  # type: ignore[assignment]
        if body:
            exchange.on_body(body)
        exchange.on_message_complete()
        return True

    def handle_request(self) -> None:
        if self.url.startswith(b"/ep/") and (self.cycle is None or self.cycle.response_complete):
            request = self._lane_request()
            exchange = None if request is None else self._exchange_for(request)
            if exchange is not None:
                self.exchange = exchange
                self.cycle = exchange  # type: ignore[assignment]
                return
        super().handle_request()

    def _lane_request(self) -> LaneRequest | None:
        """The request, when its head qualifies for the fast lane, else None."""
        method = self.parser.get_method()
        if method not in _FAST_METHODS or self.parser.should_upgrade():
            return None
        host = origin = authorization = None
        length = 0
        for name, value in self.headers:  # one pass for everything the lane looks at
            if name in _NOTED:
                if name in _FALL_BACK:
                    return None
                if name == b"content-length":
                    if not value.isdigit() or int(value) > FAST_BODY_LIMIT:
                        return None
                    length = int(value)
                elif name == b"host":
                    host = value
                elif name == b"origin":
                    origin = value
                elif authorization is None:
                    authorization = value
        raw_path, _, query = self.url.partition(b"?")
        if b"%" in raw_path or b"#" in raw_path:
            return None  # the ASGI path decodes it
        endpoint_id, _, rest = raw_path[4:].decode("latin-1").partition("/")
        path = "/" + rest
        return LaneRequest(
            self.url, self.headers, method.decode("ascii"),
            path + ("?" + query.decode("latin-1") if query else ""), path, endpoint_id,
            host, origin, authorization,
            self.parser.should_keep_alive() and self.parser.get_http_version() == "1.1",
            length,
        )

    def _exchange_for(self, request: LaneRequest) -> Exchange | None:
        """An exchange when the platform can take the request in the lane now (a known
        endpoint it may reach, a ready worker with a pooled connection), else None."""
        gateway = self.gateway
        endpoint = gateway.supervisor.endpoints.get(request.endpoint_id)
        if endpoint is None or \
                self.front_door.refusal_of(request.host, request.origin) is not None or \
                not gateway.admits(endpoint, request.path, request.authorization):
            return None  # the ASGI path answers (PlatformApp refuses what the door does)
        worker = gateway.supervisor.router.try_acquire(endpoint)
        if worker is None:
            return None
        connection = gateway.upstream.checkout(worker.host, worker.port or 0)
        if connection is None:  # the ASGI path connects (and pools the connection)
            gateway.supervisor.router.release(worker)
            return None
        exchange = Exchange(self, request, endpoint, worker, connection)
        read = self._head_read
        if read is not None and read[1] + request.length == len(read[0]):
            # This request's head and body are the whole read (the parser agrees on where
            # the head ends): the same bytes again are the same request.
            self.memo.add(read[0][:read[1]], request)
        return exchange

    def on_body(self, body: bytes) -> None:
        if self.cycle is self.exchange and self.exchange is not None:
            self.exchange.on_body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.cycle is self.exchange and self.exchange is not None:
            self.message_read()
            self.exchange.on_message_complete()
        else:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.exchange is not None:
            self.exchange.client_gone()
        super().connection_lost(exc)
