"""The sans-IO response parser against h11 as an oracle, plus its edge cases and header rules."""

from __future__ import annotations

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runpod_flash.http import parse
from runpod_flash.http.errors import ConnectionClosed, ProtocolError
from runpod_flash.http.headers import HOP_BY_HOP, content_length, end_to_end
from runpod_flash.http.memo import HeadMemo
from runpod_flash.http.parse import LAST_CHUNK, ResponseParser, chunk, request_head

# --- the property: our parser reads what h11 reads --------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Framing and connection headers are chosen by the generator itself, never at random.
RESERVED = {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
            "trailer", "te"}

names = st.text(alphabet=TOKEN, min_size=1, max_size=12).filter(
    lambda name: name.lower() not in RESERVED
)
# Field values without leading/trailing whitespace (see the explicit OWS test below), with
# inner spaces and tabs and obs-text bytes.
VALUE_CHARS = "".join(map(chr, [*range(0x21, 0x7F), 0x80, 0xA0, 0xE9, 0xFF])) + " \t"
values = st.text(alphabet=VALUE_CHARS, max_size=20).map(lambda v: v.strip(" \t").encode("latin-1"))
header_lists = st.lists(st.tuples(names, values), max_size=6)


def _head(status: int, reason: bytes, headers: list[tuple[str, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    lines += [name.encode("ascii") + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(lines) + b"\r\n"


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """(request method, the response bytes, whether the server closes after them)."""
    method = draw(st.sampled_from(["GET", "HEAD"]))
    wire = b""
    for _ in range(draw(st.integers(0, 3))):
        status = draw(st.sampled_from([100, 102, 103]))
        wire += _head(status, b"Interim", draw(header_lists))
    status = draw(st.one_of(st.sampled_from([200, 204, 304, 404]), st.integers(200, 599)))
    headers = draw(header_lists)
    connection = draw(st.sampled_from([None, b"close", b"keep-alive"]))
    if connection is not None:
        headers.insert(draw(st.integers(0, len(headers))), ("Connection", connection))
    body = draw(st.binary(max_size=400))
    bodiless = method == "HEAD" or status in (204, 304)
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if status == 204:
        framing = "none"  # a 204 carries no framing headers
    elif status == 304 and framing == "chunked":
        framing = "length"
    payload = b""
    close = False
    if framing == "length":
        headers.insert(draw(st.integers(0, len(headers))),
                       (draw(st.sampled_from(["Content-Length", "content-length"])),
                        b"%d" % len(body)))
        payload = b"" if bodiless else body
    elif framing == "chunked":
        headers.insert(draw(st.integers(0, len(headers))),
                       ("Transfer-Encoding", b"chunked"))
        if not bodiless:
            cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body))), max_size=6))))
            bounds = zip([0, *cuts], [*cuts, len(body)], strict=True)
            pieces = [body[a:b] for a, b in bounds if body[a:b]]
            for piece in pieces:
                ext = draw(st.sampled_from([b"", b";name=value", b";x"]))
                payload += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
            payload += b"0\r\n\r\n"
    elif framing == "close" and not bodiless:
        payload = body
        close = True
    reason = draw(st.sampled_from([b"OK", b"", b"Some Reason"]))
    return method, wire + _head(status, reason, headers) + payload, close


def _h11_reads(method: str, data: bytes, close: bool) -> tuple[int, list, bytes, bool]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "example")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    if close:
        conn.receive_data(b"")
    response, body = None, b""
    while True:
        event = conn.next_event()
        assert event is not h11.NEED_DATA, "h11 wants more bytes: the generator is wrong"
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    assert response is not None
    return response.status_code, list(response.headers), body, conn.their_state is h11.DONE


def _assert_reads_like_h11(parser: ResponseParser, method: str, wire: bytes, close: bool,
                           expected: tuple[int, list, bytes, bool]) -> None:
    status, headers, body, keep_alive = expected
    if close:
        assert not parser.complete
        parser.feed_eof()
    assert parser.complete
    assert parser.status == status
    assert parser.headers == headers
    assert parser.take() == body
    if close:  # h11 leaves a close-delimited exchange DONE; the connection is gone all the same
        assert not parser.keep_alive
    elif not (method == "HEAD" and b"\r\ncontent-length:" not in wire.lower()
              and b"\r\ntransfer-encoding:" not in wire.lower()):
        # (a HEAD answer without framing headers: see the explicit keep-alive test)
        assert parser.keep_alive == keep_alive


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(exchange=exchanges(), data=st.data())
def test_parser_agrees_with_h11_on_valid_responses_fed_in_random_pieces(
    exchange: tuple[str, bytes, bool], data: st.DataObject
) -> None:
    method, wire, close = exchange
    expected = _h11_reads(method, wire, close)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=12))))
    parser = ResponseParser(head_request=method == "HEAD")
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        parser.feed(wire[start:end])
    _assert_reads_like_h11(parser, method, wire, close, expected)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(exchange=exchanges())
def test_a_response_read_whole_again_reads_as_h11_reads_it(
    exchange: tuple[str, bytes, bool]
) -> None:
    """The second time, a response whose head was remembered is not parsed at all."""
    method, wire, close = exchange
    expected = _h11_reads(method, wire, close)
    for _ in range(2):
        parser = ResponseParser(head_request=method == "HEAD")
        parser.feed(wire)
        _assert_reads_like_h11(parser, method, wire, close, expected)


@pytest.fixture
def known_heads(monkeypatch: pytest.MonkeyPatch) -> HeadMemo[parse.KnownHead]:
    memo: HeadMemo[parse.KnownHead] = HeadMemo()
    monkeypatch.setattr(parse, "_KNOWN_HEADS", memo)
    return memo


KNOWN = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"


def test_a_whole_response_is_remembered_and_the_next_one_keeps_its_own_body(
    known_heads: HeadMemo[parse.KnownHead]
) -> None:
    first = ResponseParser()
    first.feed(KNOWN + b"first")
    assert known_heads.get(KNOWN) == (200, first.headers, True, 5)
    second = ResponseParser()
    second.feed(KNOWN + b"again")
    assert second.headers is first.headers  # the remembered head, not a new parse
    assert (second.complete, second.status, second.keep_alive, second.take()) == \
        (True, 200, True, b"again")
    with pytest.raises(ProtocolError, match="after the end"):
        second.feed(b"x")
    reused = second.reuse()  # the connection carries on: the parser reads the next answer
    reused.feed(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
    assert (reused.complete, reused.status) == (True, 404)


@pytest.mark.parametrize("reads", [
    pytest.param([KNOWN + b"fir", b"st"], id="body-in-two-reads"),
    pytest.param([KNOWN[:10], KNOWN[10:] + b"first"], id="head-in-two-reads"),
    pytest.param([b"HTTP/1.1 100 Continue\r\n\r\n" + KNOWN + b"first"], id="after-100"),
    pytest.param([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                  b"5\r\nfirst\r\n0\r\n\r\n"], id="chunked"),
    pytest.param([b"HTTP/1.1 200 OK\r\n\r\nfirst"], id="until-close"),
])
def test_only_a_head_and_its_declared_body_in_one_first_read_are_remembered(
    known_heads: HeadMemo[parse.KnownHead], reads: list[bytes]
) -> None:
    parser = ResponseParser()
    for data in reads:
        parser.feed(data)
    assert parser.head_complete and parser.take() == b"first"
    assert len(known_heads) == 0


def test_a_remembered_head_with_part_of_its_body_is_parsed(
    known_heads: HeadMemo[parse.KnownHead]
) -> None:
    ResponseParser().feed(KNOWN + b"first")
    parser = ResponseParser()
    parser.feed(KNOWN + b"ab")
    assert parser.head_complete and not parser.complete
    parser.feed(b"cde")
    assert parser.complete and parser.take() == b"abcde"


# --- explicit cases ----------------------------------------------------------------------

@pytest.mark.parametrize("wire", [
    pytest.param(b"HELLO WORLD\r\n\r\n", id="not-http"),
    pytest.param(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", id="bad-status"),
    pytest.param(b"HTTP/1.1 42 OK\r\nContent-Length: 0\r\n\r\n", id="two-digit-status"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n",
                 id="space-before-colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
                 id="obs-fold"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="negative-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                 id="two-lengths"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\n", id="length-and-chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
                 id="bad-chunk-size"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
                 id="chunk-longer-than-declared"),
])
def test_invalid_responses_raise_protocol_error(wire: bytes) -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError):
        parser.feed(wire)


def test_data_after_the_end_of_the_response_raises() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert parser.complete
    with pytest.raises(ProtocolError, match="after the end"):
        parser.feed(b"x")


def test_a_second_response_in_the_same_bytes_raises() -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match="more than one response"):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_a_body_in_answer_to_head_raises() -> None:
    parser = ResponseParser(head_request=True)
    with pytest.raises(ProtocolError, match="HEAD"):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde")


def test_head_answer_is_complete_at_its_head_whatever_it_declares() -> None:
    for framing in (b"Content-Length: 5000", b"Transfer-Encoding: chunked", b"X-None: 1"):
        parser = ResponseParser(head_request=True)
        parser.feed(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
        assert parser.complete and parser.take() == b""


def test_head_answer_without_length_keeps_the_connection_alive() -> None:
    # A HEAD answer ends with its head, so a missing Content-Length does not make it
    # close-delimited (h11 agrees): the connection can be reused.
    wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
    parser = ResponseParser(head_request=True)
    parser.feed(wire)
    assert parser.complete
    assert parser.keep_alive == _h11_reads("HEAD", wire, False)[3] is True


@pytest.mark.parametrize("wire", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
])
def test_101_switching_protocols_raises(wire: bytes) -> None:
    with pytest.raises(ProtocolError, match="switched protocols"):
        ResponseParser().feed(wire)


def test_interim_responses_are_skipped_and_not_taken_as_final() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert parser.started and not parser.head_complete
    parser.feed(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
    assert not parser.head_complete
    parser.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nhi")
    assert (parser.status, parser.headers, parser.take()) == (
        201, [(b"content-length", b"2")], b"hi")


def test_body_until_close_completes_on_eof_and_is_not_kept_alive() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome ")
    parser.feed(b"bytes")
    assert parser.head_complete and not parser.complete
    parser.feed_eof()
    assert parser.complete and not parser.keep_alive
    assert parser.take() == b"some bytes"


@pytest.mark.parametrize(("wire", "head_request"), [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", False, id="short-body"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", False,
                 id="chunked-without-last-chunk"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Len", False, id="truncated-head"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n", False, id="only-an-interim-response"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n", True, id="truncated-head-of-head"),
])
def test_truncated_response_on_eof_raises_connection_closed_started(
    wire: bytes, head_request: bool
) -> None:
    parser = ResponseParser(head_request=head_request)
    parser.feed(wire)
    with pytest.raises(ConnectionClosed) as caught:
        parser.feed_eof()
    assert caught.value.response_started is True


def test_eof_before_any_byte_raises_connection_closed_not_started() -> None:
    with pytest.raises(ConnectionClosed) as caught:
        ResponseParser().feed_eof()
    assert caught.value.response_started is False


def test_connection_close_response_is_not_kept_alive() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert parser.complete and not parser.keep_alive


def test_trailers_are_not_merged_into_the_response_headers() -> None:
    wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n")
    parser = ResponseParser()
    parser.feed(wire)
    assert parser.complete and parser.take() == b"abc"
    assert parser.headers == _h11_reads("GET", wire, False)[1] == [
        (b"transfer-encoding", b"chunked")]


def test_header_values_exclude_surrounding_whitespace() -> None:
    # RFC 9112 §5: optional whitespace around a field value is not part of the value.
    wire = b"HTTP/1.1 200 OK\r\nX-A:  v  w \t\r\nContent-Length: 0\r\n\r\n"
    parser = ResponseParser()
    parser.feed(wire)
    assert parser.headers == _h11_reads("GET", wire, False)[1] == [
        (b"x-a", b"v  w"), (b"content-length", b"0")]


# --- what the client writes ------------------------------------------------------------

def _h11_server_reads(wire: bytes) -> tuple[h11.Request, bytes]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(wire)
    request, body = None, b""
    while True:
        event = conn.next_event()
        assert event is not h11.NEED_DATA
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    assert request is not None
    return request, body


def test_request_head_without_body_has_no_length_for_get() -> None:
    wire = request_head("GET", "/a?b=1", b"h:1", [(b"x-id", b"7")], 0)
    assert b"content-length" not in wire
    request, body = _h11_server_reads(wire)
    assert (request.method, request.target, body) == (b"GET", b"/a?b=1", b"")
    assert list(request.headers) == [(b"host", b"h:1"), (b"x-id", b"7")]


def test_request_head_with_empty_post_body_declares_zero() -> None:
    wire = request_head("POST", "/", b"h:1", [], 0)
    request, _ = _h11_server_reads(wire)
    assert (b"content-length", b"0") in list(request.headers)


def test_request_head_with_length_and_body() -> None:
    request, body = _h11_server_reads(request_head("PUT", "/x", b"h:1", [], 5) + b"hello")
    assert (request.method, body) == (b"PUT", b"hello")


def test_chunked_request_body_round_trips() -> None:
    wire = request_head("POST", "/up", b"h:1", [], None)
    wire += chunk(b"abc") + chunk(b"") + chunk(b"d" * 300) + LAST_CHUNK
    request, body = _h11_server_reads(wire)
    assert (b"transfer-encoding", b"chunked") in list(request.headers)
    assert body == b"abc" + b"d" * 300
    assert chunk(b"") == b""


# --- header rules ----------------------------------------------------------------------

def test_end_to_end_strips_hop_by_hop_headers_and_keeps_the_rest_in_order() -> None:
    headers = [(name, b"v") for name in sorted(HOP_BY_HOP)]
    kept = [(b"x-b", b"2"), (b"content-type", b"text/plain"), (b"x-a", b"1"), (b"x-b", b"3")]
    mixed = [headers[0], kept[0], *headers[1:5], kept[1], kept[2], *headers[5:], kept[3]]
    assert end_to_end(mixed) == kept


def test_end_to_end_strips_headers_named_in_connection() -> None:
    headers = [
        (b"x-keep", b"1"), (b"connection", b"X-Secret ,  keep-alive,X-Other"),
        (b"x-secret", b"s"), (b"keep-alive", b"timeout=5"), (b"connection", b"x-third"),
        (b"x-other", b"o"), (b"x-third", b"t"), (b"date", b"d"),
    ]
    assert end_to_end(headers) == [(b"x-keep", b"1"), (b"date", b"d")]


def test_end_to_end_also_drops_what_the_caller_writes_itself() -> None:
    headers = [(b"server", b"w"), (b"x-a", b"1"), (b"date", b"d"), (b"connection", b"close")]
    assert end_to_end(headers, frozenset({b"server", b"date"})) == [(b"x-a", b"1")]


def test_content_length_reads_a_plain_number_only() -> None:
    assert content_length([(b"x", b"1"), (b"content-length", b"42")]) == 42
    assert content_length([(b"content-length", b"4x")]) is None
    assert content_length([]) is None
