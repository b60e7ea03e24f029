"""Reading one HTTP/1.1 response from bytes, free of I/O (shared by both clients).

httptools (llhttp, uvicorn's parser) does the byte-level work; this adds what a client must
know that the parser cannot: a `HEAD` answer has no body whatever its headers say, interim
`1xx` responses come before the real one, and a body without length ends at close. A
server answers a route with the same head over and over: a response that arrives whole is
read through a memo of heads (`http.memo`) instead of the parser when its head was seen.
"""

from __future__ import annotations

from collections import deque

import httptools

from runpod_flash.http.errors import ConnectionClosed, ProtocolError
from runpod_flash.http.headers import Headers, content_length
from runpod_flash.http.memo import HeadMemo

# A final response's head, by its bytes: (status, headers, keep-alive, body length). Shared
# by every parser in the process: a worker answers a route with the same head all second.
KnownHead = tuple[int, Headers, bool, int]
_KNOWN_HEADS: HeadMemo[KnownHead] = HeadMemo()


class ResponseParser:
    """Feed it bytes; it collects the final response's head and body chunks.

    One parser per request: after `complete`, any further byte is a protocol error, so a
    connection is reused only when the exchange ended cleanly.
    """

    __slots__ = (
        "_head_request",
        "_headers",
        "_interim",
        "_parser",
        "buffered",
        "chunks",
        "complete",
        "head_complete",
        "headers",
        "keep_alive",
        "started",
        "status",
    )

    def __init__(self, head_request: bool = False) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._begin(head_request)

    def reuse(self, head_request: bool = False) -> ResponseParser:
        """This parser, ready for the next response on the same connection (llhttp carries
        on after a complete message); a fresh one after a HEAD (llhttp would await a body)."""
        if self._head_request or not self.complete:
            return ResponseParser(head_request)
        self._begin(head_request)
        return self

    def _begin(self, head_request: bool) -> None:
        self._head_request = head_request
        self._interim = False
        self._headers: Headers = []
        self.status = 0
        self.headers: Headers = []
        self.head_complete = False
        self.complete = False
        self.keep_alive = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0  # bytes in `chunks`
        self.started = False  # any byte of a response (interim ones included) arrived

    def feed(self, data: bytes) -> None:
        """Parse `data`; raises ProtocolError on bytes that are not a valid response.

        A response that comes whole in its first read, with a head parsed before, is taken
        from `_KNOWN_HEADS` without the parser; one whose head and declared body are its
        whole first read is remembered there.
        """
        if self.complete:
            raise ProtocolError("server sent data after the end of the response")
        if self.started or self._head_request:
            self._parse(data)
            return
        self.started = True
        end = data.find(b"\r\n\r\n") + 4
        if not 3 < end <= HeadMemo.MAX_HEAD_BYTES:  # no head, or one never remembered
            self._parse(data)
            return
        head = data[:end]
        known = _KNOWN_HEADS.get(head)
        if known is not None and known[3] == len(data) - end:
            self.status, self.headers, self.keep_alive, length = known
            self.head_complete = self.complete = True
            if length:
                self.chunks.append(data[end:])
                self.buffered = length
            return
        self._parse(data)
        if self.complete and self.buffered == len(data) - end and \
                content_length(self.headers) == self.buffered:
            # The parser agrees: this head (not an interim one before it, not a shorter one
            # ended by bare LFs), then exactly its declared body, and no more.
            _KNOWN_HEADS.add(head, (self.status, self.headers, self.keep_alive, self.buffered))

    def _parse(self, data: bytes) -> None:
        self.started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ProtocolError("server switched protocols; upgrades are not supported") from None
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, ProtocolError):  # raised by a callback below
                raise exc.__context__ from None
            raise ProtocolError(f"invalid HTTP response: {exc}") from None

    def feed_eof(self) -> None:
        """The server closed the connection: ends a body delimited by close, else raises."""
        if self.complete:
            return
        if self.head_complete and self._until_close():
            self.complete = True
            self.keep_alive = False
            return
        where = "in the body" if self.head_complete else "before the response head"
        raise ConnectionClosed(
            f"server closed the connection {where}", response_started=self.started
        )

    def take(self) -> bytes:
        """The body bytes received so far, removed from the buffer."""
        data = b"".join(self.chunks) if len(self.chunks) != 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        return data

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:  # a second response (pipelined or stray) on one request
            raise ProtocolError("server sent more than one response")
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp keeps trailing whitespace, which is not part of a field value (RFC 9112 §5).
        self._headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise ProtocolError("server switched protocols; upgrades are not supported")
            self._interim = True  # 100 Continue, 103 Early Hints: not the answer
            return
        self._interim = False
        self.status = status
        self.headers = self._headers
        self._headers = []  # trailers, if any, land here and are dropped (RFC 9110 §6.5)
        self.head_complete = True
        self.keep_alive = self._parser.should_keep_alive()
        if self._head_request:
            self.complete = True  # a HEAD answer has headers only, whatever they declare
            # llhttp would read a length-less answer to the close; HEAD's ends here.
            self.keep_alive = self._persistent()

    def _until_close(self) -> bool:
        """A body with neither length nor chunking: it ends when the server closes."""
        names = {name for name, _ in self.headers}
        return (b"content-length" not in names and b"transfer-encoding" not in names
                and self.status not in (204, 304) and not self._head_request)

    def _persistent(self) -> bool:
        tokens = {token.strip().lower() for name, value in self.headers
                  if name == b"connection" for token in value.split(b",")}
        if self._parser.get_http_version() == "1.1":
            return b"close" not in tokens
        return b"keep-alive" in tokens

    def on_body(self, body: bytes) -> None:
        if self._head_request:
            raise ProtocolError("server sent a body in answer to HEAD")
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self.keep_alive = self.keep_alive and self._parser.should_keep_alive()


def request_head(
    method: str, target: str, authority: bytes, headers: Headers, length: int | None,
    lines: bytes = b"",
) -> bytes:
    """Request line and headers (`headers`, then `lines`: headers already rendered);
    `length` None means a chunked body follows."""
    parts = [method.encode("ascii"), b" ", target.encode("latin-1"), b" HTTP/1.1\r\nhost: ",
             authority, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(lines)
    if length is None:
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
    elif length or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
        parts.append(b"content-length: %d\r\n\r\n" % length)
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data would end the body, so it is skipped)."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


LAST_CHUNK = b"0\r\n\r\n"
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
