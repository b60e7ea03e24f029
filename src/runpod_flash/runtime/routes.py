"""Turning one user function into a FastAPI endpoint of a deployed load-balanced worker.

FastAPI reads an endpoint's signature, so each endpoint gets a synthetic one: path parameters
stay path parameters, GET takes the rest as query parameters, and the other methods take them
as one JSON object described by a generated pydantic model (which also documents it in /docs).
A generator function's items are streamed as server-sent events (format in `streaming`).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from runpod_flash import strict_json
from runpod_flash.streaming import (
    SSE_MEDIA_TYPE,
    Walker,
    is_generator_function,
    send_stream,
    sse_error,
    sse_event,
)

logger = logging.getLogger("runpod_flash.runtime")

_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_BODY = "flash_body"  # the endpoint's own parameter; not a name users pick


def _resolve(func: Callable[..., Any], name: str, hint: Any) -> Any:
    """An annotation as an object; a name only importable for type checkers accepts any value."""
    if not isinstance(hint, str):
        return hint
    try:
        return eval(hint, getattr(inspect.unwrap(func), "__globals__", {}))  # as get_type_hints
    except Exception:
        logger.warning("cannot resolve annotation %r of %s(%s); it accepts any value",
                       hint, func.__qualname__, name)
        return Any


def parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    """The function's named parameters with resolved annotations (*args/**kwargs skipped)."""
    named = []
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise RuntimeError(
                f"Function '{func.__name__}' has positional-only parameter '{param.name}'; "
                "HTTP endpoints pass parameters by name, so remove the '/' from its signature"
            )
        named.append(param.replace(
            kind=param.KEYWORD_ONLY,
            annotation=Any if param.annotation is param.empty
            else _resolve(func, param.name, param.annotation),
        ))
    return named


def body_model(func: Callable[..., Any], params: list[inspect.Parameter]) -> type[BaseModel]:
    """The JSON object a body method takes; unknown keys are rejected, as a Python call would."""
    fields: dict[str, Any] = {
        param.name: (param.annotation, ... if param.default is param.empty else param.default)
        for param in params
    }
    name = "".join(part.title() for part in func.__name__.split("_")) + "Body"
    return create_model(  # type: ignore[call-overload, no-any-return]
        name, __config__=ConfigDict(extra="forbid"), __module__=func.__module__, **fields
    )


class EventStream(StreamingResponse):
    """Server-sent events that stop, closing the user's generator, when the client leaves."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, media_type=SSE_MEDIA_TYPE, headers={"cache-control": "no-cache"})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send_stream(receive, send, self.status_code, self.raw_headers,
                          self.body_iterator)  # type: ignore[arg-type]


def _sse(item: Any) -> bytes:
    return sse_event(strict_json.dumps(jsonable_encoder(item)).decode())


async def _events(func: Callable[..., Any], first: bytes, items: Walker) -> AsyncIterator[bytes]:
    """The stream after its first event; an exception ends it with an `error` event."""
    try:
        if first:
            yield first
        async for item in items:
            yield _sse(item)
    except Exception as exc:
        logger.exception("%s raised while streaming", func.__qualname__)
        yield sse_error(exc)
    finally:
        await items.aclose()


async def _stream(func: Callable[..., Any], kwargs: dict[str, Any]) -> Response:
    """A generator's items as SSE. The head waits for the first item, so an exception before
    it (bad input, a failed setup) is an ordinary error response with a status code."""
    items = Walker(func(**kwargs))
    try:
        try:
            first = _sse(await items.__anext__())
        except StopAsyncIteration:
            first = b""
    except BaseException:
        await items.aclose()
        raise
    return EventStream(_events(func, first, items))


async def _respond(func: Callable[..., Any], kwargs: dict[str, Any]) -> Response:
    """Call the user function; its exceptions become a 500 without the traceback."""
    try:
        if is_generator_function(func):
            return await _stream(func, kwargs)
        if inspect.iscoroutinefunction(func):
            result = await func(**kwargs)
        else:
            result = await run_in_threadpool(func, **kwargs)
        if isinstance(result, Response):
            return result
        try:
            content = strict_json.dumps(jsonable_encoder(result))
        except strict_json.InvalidJSON as exc:
            raise strict_json.InvalidJSON(f"the result of {func.__name__} is not valid JSON: "
                                          f"{exc}") from None
        return Response(content, media_type="application/json")
    except HTTPException:
        raise
    except Exception as exc:
        logger.exception("%s raised", func.__qualname__)
        return JSONResponse(
            {"error": str(exc), "error_type": type(exc).__name__}, status_code=500
        )


def _declares_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this content type as JSON (none counts)."""
    if not content_type:
        return True
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json"))


class StrictJSONRoute(APIRoute):
    """A route whose JSON body must be strict JSON (400 naming the problem otherwise).

    FastAPI's parser takes `NaN` and lone surrogates, which then fail in the user's code or
    in the answer, and meets deep nesting with a bare "error parsing the body". Routes
    without a body model (a `Request` parameter reads its own body) are left alone.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict(request: Request) -> Response:
            body = await request.body()  # kept on the request: FastAPI reads it from there
            if body and _declares_json(request.headers.get("content-type")):
                try:
                    strict_json.loads(body)
                except strict_json.InvalidJSON as exc:
                    return JSONResponse({"error": f"request body is not valid JSON: {exc}"},
                                        status_code=400)
            return await handler(request)

        return strict


def _is_request(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Request)


def build_endpoint(
    func: Callable[..., Any], method: str, path: str
) -> Callable[..., Awaitable[Response]]:
    """An endpoint whose signature tells FastAPI where each parameter of `func` comes from."""
    signature_params = parameters(func)
    path_names = set(_PATH_PARAM.findall(path))
    # A parameter annotated `Request` gets the request itself, as in FastAPI (headers,
    # `await request.is_disconnected()`, a streamed body).
    passed_through = path_names | {
        param.name for param in signature_params if _is_request(param.annotation)
    }
    body_params = [param for param in signature_params if param.name not in passed_through]
    if method != "GET" and body_params:
        path_params = [param for param in signature_params if param.name in passed_through]
        model = body_model(func, body_params)
        optional = all(param.default is not param.empty for param in body_params)
        signature_params = [*path_params, inspect.Parameter(
            _BODY, inspect.Parameter.KEYWORD_ONLY,
            annotation=model | None if optional else model,
            default=None if optional else inspect.Parameter.empty,
        )]

    async def endpoint(**kwargs: Any) -> Response:
        body = kwargs.pop(_BODY, None)
        if body is not None:
            kwargs.update({name: getattr(body, name) for name in type(body).model_fields})
        return await _respond(func, kwargs)

    endpoint.__signature__ = inspect.Signature(signature_params)  # type: ignore[attr-defined]
    return endpoint
