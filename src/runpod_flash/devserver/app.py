"""The dev server's FastAPI app: one route per `@remote` function, documented in /docs.

Load-balanced functions get the same endpoints a deployed worker builds (path parameters,
query parameters for GET, a JSON body model otherwise, generators streamed as server-sent
events), calling the function through the SDK. Queue functions get a Runpod-shaped
`runsync`: `{"id", "status": "COMPLETED", "output"}`, or `{"id", "status": "FAILED",
"error", "error_type"}` with the status of the error mapping in `calls`.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runpod_flash import __version__
from runpod_flash.build import BuildError
from runpod_flash.devserver.calls import (
    CallFailed,
    EndpointTracker,
    QueueArguments,
    invoke,
    route_function,
)
from runpod_flash.devserver.output import current_endpoint
from runpod_flash.devserver.routes import DevRoute, Kind
from runpod_flash.runtime.routes import build_endpoint

TITLE = "Flash Dev Server"
_SCHEMA_REF = "#/components/schemas/{model}"


def _report(log: TextIO, route: DevRoute, failure: CallFailed) -> None:
    """The error of a failed call in the terminal, with the remote traceback for a 500."""
    text = f"  {route.decl.name} failed: {failure.error_type}: {failure.message}\n"
    if failure.status_code >= 500 and failure.traceback:
        text += "".join(f"    {line}\n" for line in failure.traceback.rstrip().splitlines())
    log.write(text)
    log.flush()


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(
            f"request body is not valid JSON ({exc}); send {{\"input\": {{...}}}}"
        ) from None


def _queue_endpoint(
    route: DevRoute, tracker: EndpointTracker, log: TextIO, schemas: dict[str, Any]
) -> tuple[Callable[[Request], Awaitable[Response]], dict[str, Any]]:
    """The runsync endpoint of a queue function, and its documented request body."""
    arguments = QueueArguments(route.target)

    async def runsync(request: Request) -> Response:
        current_endpoint.set(route.endpoint)
        job_id = str(uuid.uuid4())
        try:
            kwargs = arguments(await _json_body(request))
            output = jsonable_encoder(await invoke(route.target, kwargs))
        except Exception as exc:
            failure = CallFailed.of(exc)
            _report(log, route, failure)
            return JSONResponse(
                {"id": job_id, "status": "FAILED",
                 "error": f"{failure.error_type}: {failure.message}",
                 "error_type": failure.error_type},
                status_code=failure.status_code,
            )
        finally:
            tracker.after_call(route.target)
        return JSONResponse({"id": job_id, "status": "COMPLETED", "output": output})

    schema = arguments.model.model_json_schema(ref_template=_SCHEMA_REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[arguments.model.__name__] = schema
    body = {"type": "object", "required": ["input"], "properties": {
        "input": {"$ref": _SCHEMA_REF.format(model=arguments.model.__name__)}}}
    extra = {"requestBody": {"required": False, "content": {"application/json": {
        "schema": body}}}}
    return runsync, extra


def _route_endpoint(
    route: DevRoute, tracker: EndpointTracker, log: TextIO
) -> Callable[..., Awaitable[Response]]:
    """A load-balanced function's endpoint, as a deployed worker builds it."""
    inner = build_endpoint(
        route_function(route.target, lambda: tracker.after_call(route.target)),
        route.method, route.path,
    )

    async def endpoint(**kwargs: Any) -> Response:
        current_endpoint.set(route.endpoint)  # the streamed body's task inherits it too
        try:
            return await inner(**kwargs)
        except CallFailed as failure:
            _report(log, route, failure)
            raise

    endpoint.__signature__ = inner.__signature__  # type: ignore[attr-defined]
    return endpoint


def _install_openapi(app: FastAPI, schemas: dict[str, Any]) -> None:
    """FastAPI's schema plus the queue functions' input models (referenced from openapi_extra)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version,
                                   description=app.description, routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in schemas.items():
                components.setdefault(name, schema)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_app(routes: list[DevRoute], tracker: EndpointTracker, log: TextIO) -> FastAPI:
    """The app serving `routes`; a function that cannot be served is a BuildError."""
    app = FastAPI(
        title=TITLE, version=__version__,
        description="Each route calls a `@remote` function of this project on the embedded "
                    "platform's live workers. Routes are grouped by file.",
    )
    schemas: dict[str, Any] = {}
    for route in routes:
        doc = inspect.getdoc(route.target) or ""
        try:
            if route.kind is Kind.QUEUE:
                endpoint, extra = _queue_endpoint(route, tracker, log, schemas)
            else:
                endpoint, extra = _route_endpoint(route, tracker, log), None
            app.add_api_route(
                route.path, endpoint, methods=[route.method], tags=[route.decl.file],
                summary=route.summary or route.decl.name,
                description=doc.partition("\n")[2].strip(), name=route.decl.name,
                openapi_extra=extra,
            )
        except Exception as exc:
            raise BuildError(f"{route.where}: cannot serve '{route.decl.name}': {exc}") from exc

    async def failed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CallFailed)
        return JSONResponse(exc.body(), status_code=exc.status_code)

    listing = [route.describe() for route in routes]

    async def index() -> dict[str, Any]:
        return {"message": TITLE, "docs": "/docs", "routes": listing}

    async def ping() -> dict[str, str]:
        return {"status": "healthy"}

    app.add_exception_handler(CallFailed, failed)
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ping", ping, methods=["GET"], include_in_schema=False)
    _install_openapi(app, schemas)
    return app


class RequestLog:
    """Logs each request's method, path, status and time to the terminal (pure ASGI)."""

    def __init__(self, app: Any, log: TextIO) -> None:
        self.app = app
        self.log = log
        self.color = log.isatty()

    def _line(self, method: str, path: str, status: int, seconds: float) -> str:
        stamp = time.strftime("%H:%M:%S")
        text = f"{stamp} {method} {path} -> {status} in {seconds * 1000:.1f} ms"
        if self.color:
            code = "32" if status < 400 else "33" if status < 500 else "31"
            text = f"\033[{code}m{text}\033[0m"
        return text + "\n"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def logged_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            path = scope["path"] + (f"?{scope['query_string'].decode()}"
                                    if scope.get("query_string") else "")
            self.log.write(self._line(scope["method"], path, status,
                                      time.perf_counter() - started))
            self.log.flush()


def serving_app(routes: list[DevRoute], tracker: EndpointTracker,
                log: TextIO = sys.stdout) -> RequestLog:
    """`build_app` behind the request log."""
    return RequestLog(build_app(routes, tracker, log), log)
