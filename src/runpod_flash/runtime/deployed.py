"""The deployed load-balanced worker: the manifest's routes served from the unpacked artifact.

Unlike the live worker there is no `/execute`: only the user's routes, `/ping` and the docs.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from runpod_flash import config
from runpod_flash.asgi import send_json
from runpod_flash.runtime.project import load_function, resource_entry
from runpod_flash.runtime.routes import StrictJSONRoute, build_endpoint


class _BodyTooLarge(Exception):
    """Raised out of `receive` to stop the app reading a body over the limit."""


class BodyLimit:
    """Answers 413 to bodies over `max_bytes`, whether declared up front or streamed chunked.

    Pure ASGI, so the limit applies while the body arrives, before anything buffers it all.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Any) -> None:
        await send_json(send, 413, {"error": f"request body over {self.max_bytes} bytes"})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        over = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                over = True
                raise _BodyTooLarge
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if not over:  # the app's answer to the aborted read is replaced by the 413
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if over:
            await self._reject(send)


class ServedUnder:
    """Tells the app the prefix the gateway serves it under (`/ep/<endpoint id>`), so its
    docs page loads `/ep/<id>/openapi.json` (not the platform's `/openapi.json`) and the
    schema's server URL is the public one. The gateway strips the prefix before forwarding,
    so routes still match the path the worker receives."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["root_path"] = self.prefix
        await self.app(scope, receive, send)


def gateway_prefix() -> str:
    """Where the gateway serves this worker's endpoint; empty outside the platform."""
    endpoint_id = os.environ.get(config.ENV_ENDPOINT_ID)
    return f"{config.LB_PREFIX}/{endpoint_id}" if endpoint_id else ""


class HeadAsGet:
    """Answers HEAD on every GET route, as HTTP requires (FastAPI routes don't by themselves).

    The app sees a GET; uvicorn, which still holds the original HEAD scope, sends the
    headers (Content-Length included) and drops the body.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def create_deployed_app(
    app_dir: Path, resource_name: str, max_body_bytes: int | None = None
) -> FastAPI:
    """The FastAPI app of one load-balanced resource, built from its unpacked artifact."""
    entry = resource_entry(app_dir, resource_name)
    if not entry.get("is_load_balanced"):
        raise RuntimeError(
            f"Resource '{resource_name}' is a queue-based resource, not load-balanced; "
            "it is served by a queue worker, not by HTTP routes"
        )
    app = FastAPI(title=resource_name, redoc_url=None)
    app.router.route_class = StrictJSONRoute

    @app.get("/ping", include_in_schema=False)
    async def ping() -> dict[str, str]:
        return {"status": "healthy"}

    for function in entry.get("functions", []):
        name = function["name"]
        method, path = function.get("http_method"), function.get("http_path")
        if not method or not path:
            raise RuntimeError(
                f"Function '{name}' of load-balanced resource '{resource_name}' has no "
                "HTTP method and path in the manifest; rebuild the project"
            )
        func = load_function(app_dir, function["module"], name, resource_name)
        try:
            app.add_api_route(
                path, build_endpoint(func, method.upper(), path), methods=[method.upper()],
                name=name, description=inspect.getdoc(func),
                response_model=None,
            )
        except Exception as exc:
            raise RuntimeError(
                f"Cannot serve {method} {path} with '{name}' (resource '{resource_name}'): "
                f"{exc}"
            ) from exc
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes or config.max_body_bytes())
    prefix = gateway_prefix()
    if prefix:
        app.add_middleware(ServedUnder, prefix=prefix)
    app.add_middleware(HeadAsGet)
    return app
