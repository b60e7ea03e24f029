"""The limits uvicorn's HTTP/1.1 server lacks, for the platform and for every worker.

uvicorn with httptools reads a request head of any size for any time and keeps any number of
connections: one client could stall the event loop with a 512 MiB header or hold thousands
of sockets open without sending a byte. `LimitedHttpProtocol` is uvicorn's httptools protocol
with those bounds (see its docstring); the settings come from the environment, so the
platform's reach its workers too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from runpod_flash import config

logger = logging.getLogger("runpod_flash.http")

DEFAULT_MAX_HEADER_KB = 64
DEFAULT_HEADER_TIMEOUT_S = 10.0
# Longer than the clients' pool expiry (http.aio/blocking KEEPALIVE_EXPIRY_S, 300 s), so a
# server never closes a kept-alive connection a client is about to reuse.
DEFAULT_KEEP_ALIVE_S = 600.0
DEFAULT_MAX_CONNECTIONS = 10_000
FDS_KEPT_BACK = 256  # files the process needs besides client connections (logs, SQLite, ...)
LINGER_S = 2.0  # after a refusal, what the client still sends is read (and dropped) this long

# What a connection's deadline is for (`LimitedHttpProtocol._waiting`).
_HEAD = "head"  # the request line and headers are due
_IDLE = "idle"  # kept alive between requests
_CLOSE = "close"  # refused: closed once the client has had time to read the answer


class Deadlines:
    """Deadlines checked ten times a second: heads due, idle connections, first bytes.

    A timer per request (call_later + cancel, ~4.5 us under uvloop) cost more than the rest
    of the request's bookkeeping; a dict entry costs a fraction of that, and deadlines of
    seconds do not need millisecond precision.
    """

    SWEEP_S = 0.1

    def __init__(self) -> None:
        self._due: dict[Hashable, tuple[float, Callable[[], None]]] = {}
        self._armed = False
        self._loop: asyncio.AbstractEventLoop | None = None  # the sweep's, while armed

    def add(self, key: Hashable, seconds: float, on_expiry: Callable[[], None]) -> None:
        loop = self._loop
        if not self._armed or loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._armed = True
            loop.call_later(self.SWEEP_S, self._sweep)
        self._due[key] = (loop.time() + seconds, on_expiry)

    def discard(self, key: Hashable) -> None:
        self._due.pop(key, None)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._loop = loop
        for key in [key for key, (due, _) in self._due.items() if due <= now]:
            _, on_expiry = self._due.pop(key)
            on_expiry()
        if self._due:
            loop.call_later(self.SWEEP_S, self._sweep)
        else:
            self._armed = False


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to the hard one (children inherit it:
    the platform's workers too); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open file limit from %s: %s", soft, exc)
    return soft


@dataclass(frozen=True)
class ServerLimits:
    """One server's bounds on what a client may make it hold."""

    max_head_bytes: int = DEFAULT_MAX_HEADER_KB * 1024
    head_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def from_env(cls, fds_per_connection: int = 1) -> ServerLimits:
        """The limits set in the environment (`FLASH_MAX_HEADER_KB`, `FLASH_HEADER_TIMEOUT`,
        `FLASH_KEEP_ALIVE_TIMEOUT`, `FLASH_MAX_CONNECTIONS`), the connection limit kept
        within the open file limit (a proxy holds `fds_per_connection` for each)."""
        wanted = config.max_connections(DEFAULT_MAX_CONNECTIONS)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        fitting = wanted if soft == resource.RLIM_INFINITY else \
            max(1, (soft - FDS_KEPT_BACK) // fds_per_connection)
        if fitting < wanted and os.environ.get(config.ENV_MAX_CONNECTIONS):
            logger.warning("%s=%d does not fit in the open file limit (%d); serving at most "
                           "%d connections (raise `ulimit -n` for more)",
                           config.ENV_MAX_CONNECTIONS, wanted, soft, fitting)
        return cls(
            config.max_header_bytes(DEFAULT_MAX_HEADER_KB),
            config.header_timeout_s(DEFAULT_HEADER_TIMEOUT_S),
            config.keep_alive_s(DEFAULT_KEEP_ALIVE_S),
            min(wanted, fitting),
        )


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop the parser: the head is over the limit."""


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded:

    - a request line and headers over `max_head_bytes` get `431` (counted as they arrive,
      so an endless header never grows past the limit plus one read);
    - they must arrive within `head_timeout_s` of the connection opening, or of the
      request's first byte on a kept-alive connection: `408` after (a connection that sent
      nothing is closed without a word, like a browser's unused preconnect);
    - an idle kept-alive connection closes after `keep_alive_s`;
    - past `max_connections`, the connection that has waited longest for a request (a
      slowloris's, an idle one) is closed to make room; only when every connection is busy
      is the new one refused, with `503`.

    A refusal is written with `Connection: close`, and what the client still sends is read
    and dropped for LINGER_S before closing, so the client reads the answer instead of a
    reset. Make a class for one server with `bound`.
    """

    limits: ClassVar[ServerLimits]
    deadlines: ClassVar[Deadlines]
    waiting: ClassVar[dict[LimitedHttpProtocol, None]]  # idle or awaiting a head, oldest first

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: str | None = None  # what this connection's deadline is for
        self._in_head = False  # a request's head has begun and is not complete
        self._heads = 0  # heads begun on this connection
        self._head_split = False  # the current head came in more than one read
        self._head_seen = 0  # bytes of the current head's reads after its first
        self._read = 0  # bytes in the read being parsed
        self._message_open = False  # the parser is inside a request (head or body)

    @classmethod
    def bound(cls, limits: ServerLimits, **attributes: Any) -> type[LimitedHttpProtocol]:
        """This protocol for one server: its limits, its deadlines, its waiting connections
        (and `attributes`, which a subclass needs)."""
        return type(f"Bound{cls.__name__}", (cls,), {
            "limits": limits, "deadlines": Deadlines(), "waiting": {}, **attributes})

    # the connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self.connections.discard(self)
            self.refuse(503, "the server is at its connection limit "
                        f"({config.ENV_MAX_CONNECTIONS}={self.limits.max_connections}); "
                        "retry shortly", linger=False)
            return
        self._wait(_HEAD, self.limits.head_timeout_s, self._head_timed_out)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request, if any."""
        for victim in self.waiting:
            if victim is not self:
                victim._stop_waiting()
                victim.transport.close()
                return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _wait(self, what: str, seconds: float, on_expiry: Callable[[], None]) -> None:
        self._waiting = what
        self.waiting[self] = None
        self.deadlines.add(self, seconds, on_expiry)

    def _stop_waiting(self) -> None:
        if self._waiting is not None:
            self._waiting = None
            self.waiting.pop(self, None)
            self.deadlines.discard(self)

    # reading requests
    def data_received(self, data: bytes) -> None:
        waiting = self._waiting
        if waiting is not None:
            if waiting is _CLOSE:
                return  # refused: read and dropped until the connection closes
            if waiting is _IDLE:  # a request begins (its head is due: see below)
                self._stop_waiting()
        heads, self._read = self._heads, len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._head_too_large()
            else:
                self._invalid_request()
            return
        except httptools.HttpParserError:
            self._invalid_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head:  # a head goes on into the next read
            self._head_split = True
            if self._heads == heads:  # all of this read belongs to it
                self._head_seen += len(data)
                if self._head_seen > self.limits.max_head_bytes:
                    self._head_too_large()
        if self._waiting is None and (self.cycle is None or self.cycle.response_complete):
            # Nothing in flight: a head begun, or bytes that began none (blank lines), is
            # due from now on. One behind a request in flight is due once that is answered
            # (on_response_complete), so it never cuts a slow request off.
            self._wait(_HEAD, self.limits.head_timeout_s, self._head_timed_out)

    def _invalid_request(self) -> None:
        """uvicorn's answer to bytes that are not HTTP."""
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    @property
    def between_requests(self) -> bool:
        """The parser awaits a request line, no request is being answered, and the
        connection was not refused: the next bytes begin a request."""
        return not self._message_open and self._waiting is not _CLOSE and \
            (self.cycle is None or self.cycle.response_complete)

    def begin_parsed(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        """A whole request read without the parser (its head's bytes were parsed before:
        the gateway's fast lane): the bookkeeping the parser's callbacks do for one."""
        if self._waiting is not None:  # kept alive between requests: one has begun
            self._stop_waiting()
        self._heads += 1
        self.url, self.headers = url, headers
        self.expect_100_continue = False

    def on_message_begin(self) -> None:
        # uvicorn's, less the ASGI scope: a request the gateway's fast lane takes needs
        # none, so `handle_request` makes it for those that go to the ASGI app.
        self._message_open = True
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._in_head = True
        self._heads += 1
        self._head_split = False
        self._head_seen = 0

    def on_headers_complete(self) -> None:
        limit = self.limits.max_head_bytes
        if (self._head_split or self._read > limit) and self._head_size() > limit:
            raise HeadTooLarge
        self._in_head = False
        if self._waiting is _HEAD:
            self._stop_waiting()
        self.handle_request()

    def on_message_complete(self) -> None:
        self.message_read()
        super().on_message_complete()

    def message_read(self) -> None:
        """The parser is past a request's last byte (a subclass that takes the request
        itself calls this instead of `on_message_complete`)."""
        self._message_open = False

    def _head_size(self) -> int:
        """The request line and headers as parsed (the read they ended in may hold more)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def handle_request(self) -> None:
        """Start the request whose head is complete (uvicorn's way: an ASGI task)."""
        self.scope = self.asgi_scope()
        super().on_headers_complete()

    def asgi_scope(self) -> Any:
        """The scope uvicorn's `on_message_begin` makes (uvicorn's `on_headers_complete`
        completes it)."""
        return {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    # between requests: swept deadlines instead of uvicorn's timer per response
    def on_response_complete(self) -> None:
        if self.pipeline:
            super().on_response_complete()  # starts the next queued request
            return
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        if self._in_head:  # the client has started its next request already
            self._wait(_HEAD, self.limits.head_timeout_s, self._head_timed_out)
        else:
            self._wait(_IDLE, self.timeout_keep_alive, self._idle_timed_out)

    def _unset_keepalive_if_required(self) -> None:
        """uvicorn's keep-alive timer is never armed here (see on_response_complete)."""

    def _idle_timed_out(self) -> None:
        self._waiting = None
        self.waiting.pop(self, None)
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._waiting = None
        self.waiting.pop(self, None)
        if self._in_head and (self.cycle is None or self.cycle.response_complete):
            self.refuse(408, f"the request's headers did not arrive within "
                        f"{self.limits.head_timeout_s:g}s ({config.ENV_HEADER_TIMEOUT})",
                        linger=False)
        else:
            self.transport.close()

    def _head_too_large(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # mid-response (pipelined): no answer can be written
            return
        self.refuse(431, f"the request line and headers are over "
                    f"{self.limits.max_head_bytes // 1024} KiB ({config.ENV_MAX_HEADER_KB}); "
                    "send less in headers (a large value belongs in the body)")

    def refuse(self, status: int, message: str, linger: bool = True) -> None:
        """Answer `status` with a JSON error and close: at once, or (`linger`) once the
        client has had LINGER_S to stop sending and read the answer."""
        body = json.dumps({"error": message}).encode()
        head = [STATUS_LINE[status]]
        head += (b"%s: %s\r\n" % header for header in self.server_state.default_headers)
        head += (b"content-type: application/json\r\ncontent-length: %d\r\n"
                 b"connection: close\r\n\r\n" % len(body), body)
        self.transport.write(b"".join(head))
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._wait(_CLOSE, LINGER_S, self.transport.close)
