"""The load-balanced data plane: `/ep/{endpoint_id}/{path}` proxied to a ready worker.

A raw ASGI app rather than a routed one: this is the hot path, and it needs nothing but
the endpoint id from the URL. uvicorn (llhttp) has already refused malformed and smuggling
request shapes with 400 and answers `Expect: 100-continue` itself when the body is first
read; this module does what a reverse proxy must on top: end-to-end headers only, `Via`,
one `Date`/`Server` (the platform's), bodies streamed both ways with backpressure, a
client that leaves cancels the worker's request, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from runpod_flash import config
from runpod_flash.asgi import ClientDisconnected, send_json
from runpod_flash.http.aio import ConnectionPool, Response, StreamedBody, Timeouts
from runpod_flash.http.errors import ConnectFailed, ConnectionClosed, HttpError, ResponseTimeout
from runpod_flash.http.headers import HOP_BY_HOP, Headers, content_length, end_to_end, first
from runpod_flash.http.parse import IDEMPOTENT
from runpod_flash.http.server_limits import LINGER_S
from runpod_flash.platform.credentials import GATEWAY_SECRET_HEADER, bearer
from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.metrics import Metrics, route_label
from runpod_flash.platform.routing import Backlogged, EndpointFailed, NoWorkerAvailable
from runpod_flash.platform.supervisor import Supervisor

logger = logging.getLogger("runpod_flash.platform")

PREFIX = "/ep/"
# The endpoints' request body limit, the workers' too (they inherit FLASH_MAX_BODY_MB): the
# gateway refuses what a worker would, before sending any of it on.
MAX_BODY_BYTES = config.max_body_bytes()
COLD_START_WAIT_S = float(os.environ.get("FLASH_COLD_START_WAIT", "60"))
CONNECT_TIMEOUT_S = 5.0
# First response byte: the endpoint's executionTimeoutMs, or this when it has none.
RESPONSE_TIMEOUT_S = float(os.environ.get("FLASH_GATEWAY_RESPONSE_TIMEOUT", "300"))
IDLE_TIMEOUT_S = float(os.environ.get("FLASH_GATEWAY_IDLE_TIMEOUT", "60"))  # between chunks
# A request still waiting after this long starts watching for its client leaving; quicker
# ones never pay for the watcher.
WATCH_CLIENT_AFTER_S = 0.05
ROUTE_LABELS_KEPT = 4096  # (version, method, path) -> the route template it matched
CLIENT_GONE = 499  # recorded (never sent): the client closed the connection first
VIA = (b"via", b"1.1 openflash")
PLATFORM_WRITES = frozenset({b"date", b"server"})  # the platform's server adds its own
_NO_BODY_STATUS = frozenset({204, 304})
# Credentials stay at the gateway: a deployed endpoint's API key, the platform or worker
# token of a live call (the worker answers only the gateway's secret, added per worker).
_CREDENTIALS = frozenset({b"authorization", GATEWAY_SECRET_HEADER})
_OWN_SECRET = frozenset({GATEWAY_SECRET_HEADER})
_NOT_FORWARDED_OURS = HOP_BY_HOP | _CREDENTIALS
_NOT_FORWARDED = HOP_BY_HOP | _OWN_SECRET

Scope = dict[str, Any]


class BodyOverLimit(Exception):
    """A streamed request body went over the gateway's limit."""


class BrokenOff(Exception):
    """The worker's response broke off after its head went to the client: the client's
    connection must be closed (chunked: no last chunk), so it sees a truncated response,
    never a complete-looking one. Recorded as a 502."""


class _ClientWatch:
    """Notices a client that leaves while its request is in a worker's hands.

    uvicorn's `receive()` returns `http.disconnect` when the client's connection closes;
    waiting on it needs a task, so one starts only for requests still running after
    WATCH_CLIENT_AFTER_S (or streaming a response). On disconnect the request's task is
    cancelled, which closes the worker connection: the worker sees the disconnect too.
    """

    __slots__ = ("_receive", "_request_task", "_task", "_timer", "gone")

    def __init__(self, receive: Any) -> None:
        self._receive = receive
        self._request_task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.gone = False

    def arm(self) -> None:
        """The request body has been read: from now on receive() only reports a disconnect."""
        self._timer = asyncio.get_running_loop().call_later(WATCH_CLIENT_AFTER_S, self.now)

    def now(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._request_task is not None:
            self._request_task.cancel()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


class Gateway:
    """Routes `/ep/{id}/...`; live `/execute` needs the platform token, deployed endpoints
    need the API key (or the platform token) when the platform was given one."""

    def __init__(
        self, supervisor: Supervisor, token: str, api_key: str | None, metrics: Metrics
    ) -> None:
        self.supervisor = supervisor
        self.metrics = metrics
        self._platform_auth = f"Bearer {token}".encode()
        self._api_key_auth = f"Bearer {api_key}".encode() if api_key else None
        self.upstream = ConnectionPool()
        self._route_labels: dict[tuple[str, str, str], str] = {}

    def close(self) -> None:
        self.upstream.close()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        endpoint_id, _, rest = scope["path"][len(PREFIX):].partition("/")
        endpoint = self.supervisor.endpoints.get(endpoint_id)
        if endpoint is None:
            await send_json(send, 404, {"error": f"Endpoint '{endpoint_id}' not found"})
            return
        if endpoint.spec.get("type") == "QB":
            await send_json(send, 404, {"error": (
                f"'{endpoint_id}' is a queue-based endpoint; submit jobs to "
                f"/v2/{endpoint_id}/run or /v2/{endpoint_id}/runsync")})
            return
        path = "/" + rest
        headers = scope["headers"]
        authorization = first(headers, b"authorization")
        if not self._token_ok(endpoint, path, authorization):
            await send_json(send, 401, {"error": "missing or invalid platform token"})
            return
        if not self._key_ok(endpoint, authorization):
            await send_json(send, 401, {
                "error": "missing or invalid API key; send 'Authorization: Bearer <key>'"
            }, [(b"www-authenticate", b"Bearer")])
            return
        declared = content_length(headers)
        if declared is not None and declared > MAX_BODY_BYTES:
            # Refused before reading: a client that sent `Expect: 100-continue` never
            # gets a 100 and need not send the body at all.
            if not any(name == b"expect" for name, _ in headers):
                await _linger(receive)  # it is sending the body anyway: let it see the 413
            await reply(send, 413, _over_limit(declared))
            return
        started = time.perf_counter()
        watch = _ClientWatch(receive)
        try:
            status = await self._handle(endpoint, scope, path, headers, declared, receive,
                                        send, watch)
        except BrokenOff:
            status = 502  # returning unfinished makes uvicorn close the client's connection
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            _uncancel()
            status = CLIENT_GONE
        finally:
            watch.stop()
        self.record(endpoint, scope["method"], path, status, started)

    def admits(self, endpoint: Endpoint, path: str, authorization: bytes | None) -> bool:
        """A load-balanced endpoint, and the request's `Authorization` is what it needs."""
        return endpoint.spec.get("type") != "QB" and \
            self._token_ok(endpoint, path, authorization) and \
            self._key_ok(endpoint, authorization)

    def _token_ok(self, endpoint: Endpoint, path: str, authorization: bytes | None) -> bool:
        """Live `/execute` runs arbitrary code: only the platform token reaches it, or a
        live worker's own token (its code calls live endpoints, as a script does)."""
        return endpoint.kind != "live" or path != "/execute" or \
            self._credential_ok(endpoint, authorization, self._platform_auth)

    def _key_ok(self, endpoint: Endpoint, authorization: bytes | None) -> bool:
        return endpoint.kind == "live" or self._api_key_auth is None or \
            self._credential_ok(endpoint, authorization, self._api_key_auth,
                                self._platform_auth)

    def _credential_ok(
        self, endpoint: Endpoint, authorization: bytes | None, *accepted: bytes
    ) -> bool:
        """One of `accepted`, or the token of a worker whose code may call this endpoint
        (a deployed worker its deployment's endpoints, a live worker live ones)."""
        if authorized(authorization, *accepted):
            return True
        grant = self.supervisor.credentials.for_token(bearer(authorization))
        return grant is not None and grant.may_call(endpoint.id, endpoint.kind == "live")

    def _carries_ours(self, authorization: bytes | None) -> bool:
        """Whether `Authorization` holds the platform token or a worker's: user code behind
        an open endpoint keeps its own auth headers, never ours."""
        return authorization is not None and (
            hmac.compare_digest(authorization, self._platform_auth)
            or self.supervisor.credentials.for_token(bearer(authorization)) is not None)

    def forward_headers(
        self, endpoint: Endpoint, headers: Headers, authorization: bytes | None
    ) -> Headers:
        """What the worker gets: end-to-end headers, never a credential of ours (the API
        key, the token of a live call); the worker's secret is added per worker."""
        forwarded = end_to_end(headers, self.not_forwarded(endpoint, authorization))
        forwarded.append(VIA)
        return forwarded

    def not_forwarded(
        self, endpoint: Endpoint, authorization: bytes | None
    ) -> frozenset[bytes]:
        """The request headers a worker never gets: hop-by-hop ones and our credentials
        (all of `Authorization` when it is ours, only the secret header otherwise)."""
        ours = endpoint.kind == "live" or self._api_key_auth or \
            self._carries_ours(authorization)
        return _NOT_FORWARDED_OURS if ours else _NOT_FORWARDED

    def record(
        self, endpoint: Endpoint, method: str, path: str, status: int, started: float
    ) -> None:
        endpoint.stats["requests"] += 1
        if status >= 500:
            endpoint.stats["errors"] += 1
        key = (endpoint.version, method, path)
        label = self._route_labels.get(key)
        if label is None:
            if len(self._route_labels) >= ROUTE_LABELS_KEPT:
                self._route_labels.clear()  # paths with ids in them: bounded, not grown
            label = self._route_labels[key] = route_label(
                endpoint.spec.get("routes") or {}, method, path)
        self.metrics.observe_request(endpoint.id, label, status, time.perf_counter() - started)

    async def _handle(
        self, endpoint: Endpoint, scope: Scope, path: str, headers: Headers,
        declared: int | None, receive: Any, send: Any, watch: _ClientWatch,
    ) -> int:
        message = await receive()  # uvicorn answers `Expect: 100-continue` here
        if message["type"] == "http.disconnect":
            return CLIENT_GONE
        upload = None
        if message.get("more_body"):
            upload = _Upload(message.get("body", b""), receive, watch.arm)
        else:
            watch.arm()
        raw_path = scope.get("raw_path") or scope["path"].encode()
        target = "/" + raw_path.decode("latin-1")[len(PREFIX):].partition("/")[2]
        query = scope.get("query_string", b"").decode("latin-1")
        target += f"?{query}" if query else ""
        try:
            return await self.forward(
                endpoint, scope["method"], target,
                self.forward_headers(endpoint, headers, first(headers, b"authorization")),
                message.get("body", b""), upload, declared, send, watch,
            )
        except ClientDisconnected:
            return CLIENT_GONE  # mid-upload: the worker's connection was closed unfinished
        except BodyOverLimit:
            return await reply(send, 413, _over_limit(None))

    async def forward(
        self, endpoint: Endpoint, method: str, target: str, forward_headers: Headers,
        whole_body: bytes, upload: _Upload | None, declared: int | None, send: Any,
        watch: Any,
    ) -> int:
        """Proxy to a ready worker; returns the status sent.

        A request that never reached a worker is tried once more elsewhere; one a worker
        dropped before answering is too, when its method is idempotent and its body held.
        A failed connection never marks a worker unhealthy: that is `/ping`'s job.
        """
        timeouts = Timeouts(CONNECT_TIMEOUT_S, response_timeout(endpoint), IDLE_TIMEOUT_S)
        body = whole_body if upload is None else StreamedBody(upload, declared)
        failed: Worker | None = None
        for attempt in (1, 2):
            try:
                worker = (failed is None and self.supervisor.router.try_acquire(endpoint)) or \
                    await self.supervisor.router.acquire(endpoint, COLD_START_WAIT_S, failed)
            except NoWorkerAvailable as exc:
                return await reply(send, 503, str(exc), [(b"retry-after", b"1")])
            except Backlogged as exc:
                return await reply(send, 429, str(exc), [(b"retry-after", b"1")])
            except EndpointFailed as exc:
                return await reply(send, 503, str(exc), [(b"retry-after", b"5")])
            try:
                response = await self.upstream.request(
                    worker.host, worker.port or 0, method, target,
                    with_secret(forward_headers, worker), body,
                    timeouts,
                )
                if upload is not None and not upload.finished:
                    await upload.discard_rest()
                return await relay(response, method, send, watch)
            except HttpError as exc:
                if not isinstance(exc, ResponseTimeout):
                    self.supervisor.health.suspect(worker)
                if attempt == 1 and retry_elsewhere(exc, method, replayable=upload is None):
                    failed = worker
                    continue
                return await reply(send, *failure_reply(worker.id, method, exc))
            finally:
                self.supervisor.router.release(worker)
        raise AssertionError("the loop returns on its last attempt")


async def _linger(receive: Any) -> None:
    """Read and drop the body a client sends without waiting for `100 Continue`, for at most
    LINGER_S, before refusing it: it then reads the refusal instead of a connection reset
    (uvicorn ends a request's body once its response is sent). Nothing is kept."""

    async def drain() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(drain(), LINGER_S)


def with_secret(headers: Headers, worker: Worker) -> Headers:
    """A request's headers for one worker: with its gateway secret, which it requires."""
    return [*headers, (GATEWAY_SECRET_HEADER, worker.gateway_secret)]


def authorized(authorization: bytes | None, *accepted: bytes) -> bool:
    """Whether a request's `Authorization` value is one of `accepted` (compared in constant
    time)."""
    return authorization is not None and any(
        hmac.compare_digest(authorization, expected) for expected in accepted)


def relayed_headers(
    status: int, method: str, upstream: Headers, whole_length: int | None
) -> Headers:
    """The worker's headers as the client gets them: end-to-end ones only, the platform's
    own Date and Server, `Via`, and the body's length where there is one to state
    (`whole_length` when the whole body is in hand; else the worker's own, if any)."""
    headers = end_to_end(upstream, PLATFORM_WRITES)
    headers.append(VIA)
    if status in _NO_BODY_STATUS:
        return headers
    length = whole_length if whole_length is not None and method != "HEAD" \
        else content_length(upstream)
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    return headers


async def relay(response: Response, method: str, send: Any, watch: Any) -> int:
    """Send the worker's response on, streaming its body as it arrives."""
    status = response.status
    if status in _NO_BODY_STATUS or method == "HEAD" or response.complete:
        payload = await response.read() if response.complete else b""
        await response.aclose()
        headers = relayed_headers(status, method, response.headers, len(payload))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return status
    headers = relayed_headers(status, method, response.headers, None)  # else chunked
    watch.now()  # a client leaving mid-stream must stop the worker's stream too
    await send({"type": "http.response.start", "status": status, "headers": headers})
    try:
        async for piece in response:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    except HttpError as exc:
        logger.warning("response from worker broke off mid-stream (%s); closing the "
                       "client's connection", exc)
        raise BrokenOff(str(exc)) from None
    await send({"type": "http.response.body", "body": b""})
    return status


class _Upload:
    """A request body read from the client as the worker takes it.

    A client that leaves mid-body raises ClientDisconnected, so a truncated body is never
    sent on as a complete one. When the worker answers before reading it all (an early
    413, say), the rest is read and dropped before the answer is sent: a client still
    uploading would otherwise get a reset instead of the answer.
    """

    __slots__ = ("_on_end", "_pending", "_receive", "_size", "finished")

    def __init__(self, first: bytes, receive: Any, on_end: Callable[[], None]) -> None:
        self._pending: bytes | None = first
        self._receive = receive
        self._on_end = on_end
        self._size = len(first)
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (piece := await self._next()) is not None:
            if piece:
                yield piece

    async def discard_rest(self) -> None:
        self._pending = None
        while await self._next() is not None:
            pass

    async def _next(self) -> bytes | None:
        if self._pending is not None:
            piece, self._pending = self._pending, None
            return piece
        if self.finished:
            return None
        message = await self._receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client disconnected mid-body")
        piece: bytes = message.get("body", b"")
        self._size += len(piece)
        if self._size > MAX_BODY_BYTES:
            raise BodyOverLimit
        if not message.get("more_body"):
            self.finished = True
            self._on_end()
        return piece


def response_timeout(endpoint: Endpoint) -> float:
    timeout_ms = endpoint.spec.get("executionTimeoutMs") or 0
    return timeout_ms / 1000 if timeout_ms > 0 else RESPONSE_TIMEOUT_S


def retry_elsewhere(exc: HttpError, method: str, replayable: bool) -> bool:
    """Whether a failed request may go to another worker.

    One that never reached its worker may; one the worker dropped before answering only
    when its method is idempotent and its body is still held; anything else may have run.
    """
    if isinstance(exc, ConnectFailed):
        return True
    if isinstance(exc, ConnectionClosed):
        return replayable and method in IDEMPOTENT and not exc.response_started
    return False


def failure_reply(worker_id: str, method: str, exc: HttpError) -> tuple[int, str]:
    """The status and message a client gets when its worker could not answer."""
    if isinstance(exc, ResponseTimeout):
        return 504, (f"worker {worker_id} did not answer this {method} in time ({exc}); "
                     "raise the endpoint's executionTimeoutMs if it needs longer")
    if isinstance(exc, ConnectFailed):
        return 502, f"worker {worker_id} is unreachable: {exc}"
    if isinstance(exc, ConnectionClosed):
        return 502, (f"worker {worker_id} closed the connection while handling this {method} "
                     f"request ({exc}); it was not retried because it may have run")
    return 502, f"worker {worker_id} answered with invalid HTTP: {exc}"


def _over_limit(declared: int | None) -> str:
    size = f"of {declared} bytes " if declared is not None else ""
    return (f"request body {size}over the {MAX_BODY_BYTES / 1024**2:g} MiB limit "
            f"({MAX_BODY_BYTES} bytes); send less, or raise {config.ENV_MAX_BODY_MB} on the "
            "platform")


def _uncancel() -> None:
    """Our own cancellation (the client left) is handled; don't let it leak further."""
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
        task.uncancel()


async def reply(send: Any, status: int, message: str, headers: Any = ()) -> int:
    await send_json(send, status, {"error": message}, list(headers))
    return status
