"""The ASGI chores the gateway and the workers' raw apps share."""

from __future__ import annotations

import json
from typing import Any


class ClientDisconnected(Exception):
    """The client went away before its request body was complete: nothing may act on it."""


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it is over `limit` bytes.

    Raises ClientDisconnected when the client leaves mid-body, so a truncated body is
    never taken for a complete one.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client disconnected before the request body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_json(
    send: Any, status: int, body: Any = None, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A complete response with a JSON body (or an empty one when `body` is None)."""
    payload = b"" if body is None else json.dumps(body).encode()
    all_headers = [(b"content-length", str(len(payload)).encode()), *(headers or [])]
    if body is not None:
        all_headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": payload})
