"""What can go wrong on a hop, named so callers can tell a safe retry from an unsafe one."""

from __future__ import annotations


class HttpError(OSError):
    """Base of the client's transport errors (an OSError, as socket errors are)."""


class ConnectFailed(HttpError):
    """No connection could be made: nothing was sent, so any request may be tried again."""


class ConnectionClosed(HttpError):
    """The server closed the connection before the response was complete.

    `response_started` says whether any byte of the response had arrived; a request that
    failed before that on a reused connection may be resent only if its method is
    idempotent (the server may have processed it).
    """

    def __init__(self, message: str, *, response_started: bool = False) -> None:
        super().__init__(message)
        self.response_started = response_started


class ProtocolError(HttpError):
    """The server's bytes are not a valid HTTP/1.1 response."""


class ResponseTimeout(HttpError, TimeoutError):
    """No response head within the first-byte timeout, or no body bytes within the idle one."""


class BodyTooLarge(HttpError):
    """A response body went over the size the caller allows."""
