"""The live worker's ASGI app: `/ping` and `/execute`.

Two fixed routes on the hot path of every live call: a plain ASGI callable, no router. Only
the platform reaches it (`runtime.gate`: its gateway checked the caller's token).
A generator function's call is answered as a stream of NDJSON lines (`executor.execute_stream`).
"""

from __future__ import annotations

import logging
from typing import Any

from runpod_flash import config, strict_json
from runpod_flash.asgi import ClientDisconnected, read_body, send_json
from runpod_flash.runtime.executor import (
    CallRequest,
    FunctionNotLoaded,
    FunctionStore,
    execute,
    execute_stream,
)
from runpod_flash.streaming import NDJSON_MEDIA_TYPE, is_generator_function, send_stream

logger = logging.getLogger("runpod_flash.runtime")

_NDJSON_HEADERS = [(b"content-type", NDJSON_MEDIA_TYPE.encode()), (b"cache-control", b"no-cache")]


class LiveWorkerApp:
    """Runs functions shipped by `@remote` callers the gateway admitted."""

    def __init__(self) -> None:
        self.ready = False  # /ping answers 204 until the server accepts connections
        self._max_body = config.max_body_bytes()
        self._store = FunctionStore()

    def mark_ready(self) -> None:
        self.ready = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping" and method in ("GET", "HEAD"):
            if self.ready:
                await send_json(send, 200, {"status": "healthy"})
            else:
                await send_json(send, 204)
        elif path == "/execute" and method == "POST":
            await self._execute(scope, receive, send)
        elif path in ("/ping", "/execute"):
            await send_json(send, 405, {"error": f"{method} not allowed on {path}"})
        else:
            await send_json(send, 404, {"error": f"{path} not found on a live worker"})

    async def _execute(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body = await read_body(receive, self._max_body)
        except ClientDisconnected:
            return  # the caller left mid-upload: nothing to run, nobody to answer
        if body is None:
            await send_json(send, 413, {"error": config.over_limit(
                "The call's arguments", self._max_body + 1, self._max_body,
                config.ENV_MAX_BODY_MB)})
            return
        try:
            call = CallRequest.from_json(strict_json.loads(body))
        except (ValueError, TypeError) as exc:
            await send_json(send, 400, {"error": str(exc)})
            return
        try:
            func = self._store.get(call)
        except FunctionNotLoaded:
            await send_json(send, 409, {"error": "function not loaded", "code": "not_loaded"})
            return
        except Exception as exc:  # unpickling the function itself failed
            logger.exception("cannot load function %s", call.function_name)
            message = f"Cannot load function '{call.function_name}': {exc}"
            await send_json(send, 400, {"error": message})
            return
        if is_generator_function(func):
            await send_stream(receive, send, 200, _NDJSON_HEADERS, execute_stream(func, call))
            return
        await send_json(send, 200, await execute(self._store, call))
