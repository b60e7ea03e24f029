"""The load-balanced data plane: `/ep/{endpoint_id}/{path}` proxied to a ready worker.

A raw ASGI app rather than a routed one: this is the hot path, and it needs nothing but
the endpoint id from the URL.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from typing import Any

from runpod_flash.asgi import read_body, send_json
from runpod_flash.platform.metrics import Metrics, route_label
from runpod_flash.platform.supervisor import (
    Backlogged,
    EndpointFailed,
    NoWorkerAvailable,
    Supervisor,
)
from runpod_flash.platform.upstream import UpstreamPool

logger = logging.getLogger("runpod_flash.platform")

PREFIX = "/ep/"
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
WORKER_HOST = "127.0.0.1"
MAX_BODY_BYTES = 64 * 1024 * 1024
COLD_START_WAIT_S = float(os.environ.get("FLASH_COLD_START_WAIT", "60"))
_HOP_BY_HOP = {
    b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"host",
    b"proxy-authorization", b"te", b"trailer", b"content-length",
}

Scope = dict[str, Any]


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
        self.upstream = UpstreamPool()

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
        if endpoint.kind == "live":
            if path == "/execute" and not self._authorized(headers, self._platform_auth):
                await send_json(send, 401, {"error": "missing or invalid platform token"})
                return
        elif self._api_key_auth is not None:
            if not self._authorized(headers, self._api_key_auth, self._platform_auth):
                await send_json(send, 401, {
                    "error": "missing or invalid API key; send 'Authorization: Bearer <key>'"
                }, [(b"www-authenticate", b"Bearer")])
                return
            headers = [(k, v) for k, v in headers if k != b"authorization"]
        body = await read_body(receive, MAX_BODY_BYTES)
        if body is None:
            await send_json(send, 413, {"error": f"request body over {MAX_BODY_BYTES} bytes"})
            return
        started = time.perf_counter()
        status = await self._forward(endpoint, scope, path, headers, body, send)
        endpoint.stats["requests"] += 1
        if status >= 500:
            endpoint.stats["errors"] += 1
        self.metrics.observe_request(
            endpoint.name, route_label(endpoint.spec.get("routes") or {}, scope["method"], path),
            status, time.perf_counter() - started,
        )

    @staticmethod
    def _authorized(headers: list[tuple[bytes, bytes]], *accepted: bytes) -> bool:
        for name, value in headers:
            if name == b"authorization":
                return any(hmac.compare_digest(value, expected) for expected in accepted)
        return False

    async def _forward(
        self, endpoint: Any, scope: Scope, path: str, headers: Any, body: bytes, send: Any
    ) -> int:
        """Proxy to a ready worker; returns the status sent. A request whose worker died
        before answering is retried once elsewhere when that is safe (idempotent method)."""
        raw_path = scope.get("raw_path") or scope["path"].encode()
        target = "/" + raw_path.decode("latin-1")[len(PREFIX):].partition("/")[2]
        query = scope.get("query_string", b"").decode("latin-1")
        target += f"?{query}" if query else ""
        forward_headers = [(k, v) for k, v in headers if k not in _HOP_BY_HOP]
        method = scope["method"]
        for attempt in (1, 2):
            try:
                worker = await self.supervisor.acquire(endpoint, COLD_START_WAIT_S)
            except NoWorkerAvailable as exc:
                return await _reply(send, 503, str(exc), [(b"retry-after", b"1")])
            except Backlogged as exc:
                return await _reply(send, 429, str(exc), [(b"retry-after", b"1")])
            except EndpointFailed as exc:
                return await _reply(send, 503, str(exc), [(b"retry-after", b"5")])
            try:
                status, response_headers, payload = await self.upstream.request(
                    WORKER_HOST, worker.port or 0, method, target, forward_headers, body
                )
            except OSError as exc:
                self.supervisor.report_unreachable(worker)
                self.upstream.forget(WORKER_HOST, worker.port or 0)
                never_sent = isinstance(exc, ConnectionRefusedError)
                if attempt == 1 and (never_sent or method in IDEMPOTENT):
                    continue
                return await _reply(send, 502, (
                    f"worker {worker.id} failed while handling this {method} request ({exc}); "
                    "it was not retried because it may have run (not idempotent)"
                    if not never_sent else f"worker {worker.id} is unreachable"
                ))
            finally:
                self.supervisor.release(worker)
            response_headers = [(k, v) for k, v in response_headers if k not in _HOP_BY_HOP]
            response_headers.append((b"content-length", str(len(payload)).encode()))
            await send({
                "type": "http.response.start", "status": status, "headers": response_headers
            })
            await send({"type": "http.response.body", "body": payload})
            return status
        raise AssertionError("the loop returns on its last attempt")


async def _reply(send: Any, status: int, message: str, headers: Any = ()) -> int:
    await send_json(send, status, {"error": message}, list(headers))
    return status
