"""Header rules every hop applies: what a proxy must not pass on (RFC 9110 §7.6.1)."""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]

# Hop-by-hop headers, plus the framing ones each hop writes for itself.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
    b"trailer", b"upgrade", b"proxy-authenticate", b"proxy-authorization", b"host",
    b"content-length", b"expect",
})


def end_to_end(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """`headers` without hop-by-hop ones, those a `Connection` header names, and `drop`.

    Names must be lower case (ASGI servers and our parser both give them so).
    """
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    if not named:
        return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in drop]
    return [
        (k, v) for k, v in headers if k not in HOP_BY_HOP and k not in named and k not in drop
    ]


def rendered_end_to_end(headers: Headers, skip: frozenset[bytes]) -> bytes | None:
    """`end_to_end(headers, drop)` as header lines, in one pass (`skip`: HOP_BY_HOP | drop).

    None when a `Connection` header says more than `keep-alive`: the headers it names must
    go too, which `end_to_end` works out.
    """
    parts: list[bytes] = []
    for name, value in headers:
        if name in skip:
            if name == b"connection" and value.lower() != b"keep-alive":
                return None
            continue
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts)


def content_length(headers: Headers) -> int | None:
    """The declared body length; None when there is none (or it is not a plain number)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def first(headers: Headers, wanted: bytes) -> bytes | None:
    """The value of the first `wanted` header (a lower-case name), or None."""
    for name, value in headers:
        if name == wanted:
            return value
    return None
