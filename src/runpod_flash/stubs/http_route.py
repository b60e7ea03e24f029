"""Deployed load-balanced calls: `await process_data(5, 3)` → `POST {endpoint}/api/process`.

Arguments travel as plain JSON, so the endpoint serves curl and browsers the same way; path
parameters are filled in, GET sends the rest as query parameters. A generator function's
route answers server-sent events, which `stream`/`astream` turn back into items.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from runpod_flash.control import find_running, local_token
from runpod_flash.http.aio import Timeouts
from runpod_flash.http.blocking import open_response, request
from runpod_flash.http.headers import Headers
from runpod_flash.resources import ServerlessResource
from runpod_flash.serialization import RemoteExecutionError
from runpod_flash.streaming import SSE_MEDIA_TYPE, SSEDecoder, Walker, aread_items, read_items
from runpod_flash.stubs.peers import peer_url

DEFAULT_TIMEOUT_S = 30.0
NOT_DEPLOYED = "Endpoint URL not available - endpoint may not be deployed"


class EndpointHTTPError(RuntimeError):
    """The endpoint answered with an error status that maps to no exception class here."""

    def __init__(self, endpoint: str, status: int, body: str) -> None:
        super().__init__(f"HTTP error from endpoint {endpoint}: {status} - {body[:500]}")
        self.status = status
        self.body = body


def endpoint_url(resource: ServerlessResource) -> tuple[str, dict[str, str]]:
    """(URL, auth headers) of the deployed endpoint, looked up once: fills
    `resource.endpoint_url`, so later calls go straight to it."""
    from runpod_flash.control import deployed_endpoint_id

    api_key = os.environ.get("FLASH_API_KEY")
    if not resource.endpoint_url:
        resource.endpoint_url = peer_url(resource.name)  # inside a deployed worker
    if resource.endpoint_url:
        token = api_key or local_token()
        return resource.endpoint_url, {"Authorization": f"Bearer {token}"} if token else {}
    platform = find_running()
    if platform is None:
        raise ValueError(NOT_DEPLOYED)
    endpoint_id = deployed_endpoint_id(resource.name)
    status, data = request("GET", f"{platform.url}/api/v1/endpoints/{endpoint_id}", None,
                           platform.auth, 10)
    summary = json.loads(data) if status == 200 else {}
    if summary.get("kind") != "deployed":
        raise ValueError(NOT_DEPLOYED)
    resource.endpoint_url = platform.url + summary["path"]  # /ep/<id>, or /v2/<id> for queues
    return resource.endpoint_url, {"Authorization": f"Bearer {api_key or platform.token}"}


def _json_or_type_error(func: Callable[..., Any], values: dict[str, Any]) -> None:
    for name, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"Argument '{name}' of {func.__name__}() is a {type(value).__name__}, which "
                "cannot be sent as JSON to a deployed endpoint; pass JSON types (str, int, "
                "float, bool, None, list, dict) or use a Live resource for Python objects"
            ) from None


def build_request(
    func: Callable[..., Any], method: str, path: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, bytes | None]:
    """(target path with query, JSON body) for one call, validated before anything is sent."""
    bound = inspect.signature(func).bind(*args, **kwargs)  # TypeError for wrong arguments
    values = dict(bound.arguments)
    _json_or_type_error(func, values)
    target = path
    for name in list(values):
        placeholder = next(
            (p for p in (f"{{{name}}}", *_typed_placeholders(path, name)) if p in target), None
        )
        if placeholder:
            target = target.replace(placeholder, quote(str(values.pop(name)), safe=""))
    if method == "GET":
        query = urlencode(
            {k: json.dumps(v) if isinstance(v, (dict, list)) else _query_value(v)
             for k, v in values.items() if v is not None},
        )
        return target + (f"?{query}" if query else ""), None
    return target, json.dumps(values).encode()


def _typed_placeholders(path: str, name: str) -> list[str]:
    """`{user_id:int}` style placeholders of `name` in `path`."""
    start = path.find(f"{{{name}:")
    return [path[start:path.index("}", start) + 1]] if start >= 0 else []


def _query_value(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _remote_error(func: Callable[..., Any], body: Any) -> Exception | None:
    """The remote exception (`{"error", "error_type"}`) as its own class, when known here."""
    if not isinstance(body, dict) or "error_type" not in body:
        return None
    module = sys.modules.get(getattr(func, "__module__", ""), None)
    candidate = getattr(module, body["error_type"], None) or getattr(
        builtins, body["error_type"], None
    )
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        try:
            return candidate(body.get("error", ""))
        except Exception:
            return None
    return None


def _raise_for(func: Callable[..., Any], endpoint: str, status: int, data: bytes) -> None:
    """Rebuild the remote exception when its class is known here, else an HTTP error."""
    text = data.decode(errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    exc = _remote_error(func, body) if status >= 500 else None
    if exc is not None:
        if hasattr(exc, "add_note"):
            exc.add_note(f"raised by endpoint {endpoint} (HTTP {status})")
        raise exc
    raise EndpointHTTPError(endpoint, status, text)


def _timeout(resource: ServerlessResource) -> float:
    return resource.execution_timeout_s or DEFAULT_TIMEOUT_S


def _transport_error(resource: ServerlessResource, url: str, exc: OSError) -> Exception:
    """What the caller sees when the endpoint cannot be reached or stops answering."""
    if isinstance(exc, TimeoutError):
        return TimeoutError(
            f"Execution timeout on {resource.name} after {_timeout(resource):g}s"
        )
    return ConnectionError(f"Failed to connect to endpoint {resource.name} ({url}): {exc}")


def _lost(resource: ServerlessResource, url: str, exc: OSError) -> Exception:
    """What the caller sees when a stream of items breaks off."""
    if isinstance(exc, TimeoutError):
        return _transport_error(resource, url, exc)
    return ConnectionError(
        f"Connection to endpoint {resource.name} ({url}) was lost while streaming: {exc}"
    )


def call(
    resource: ServerlessResource,
    func: Callable[..., Any],
    route: tuple[str, str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    method, path = route
    target, body = build_request(func, method, path, args, kwargs)
    url, headers = endpoint_url(resource)
    try:
        status, data = request(method, url + target, body, headers, _timeout(resource))
    except OSError as exc:
        raise _transport_error(resource, url, exc) from None
    if status >= 400:
        _raise_for(func, resource.name, status, data)
    return json.loads(data) if data else None


# -- generator functions: their routes answer server-sent events (`runpod_flash.streaming`) --


class _Events:
    """Reads a route's event stream: one item per event; an `error` event raises the remote
    exception, rebuilt as a failed plain call's is."""

    def __init__(self, func: Callable[..., Any], endpoint: str) -> None:
        self._func = func
        self._endpoint = endpoint
        self._decoder = SSEDecoder()

    def feed(self, data: bytes) -> Iterator[Any]:
        for event in self._decoder.feed(data):
            if event.event == "message":
                yield json.loads(event.data)
            elif event.event == "error":
                raise self._error(event.data)

    def _error(self, data: str) -> Exception:
        try:
            body = json.loads(data)
        except ValueError:
            body = {"error": data}
        exc = _remote_error(self._func, body)
        if exc is None:
            error_type = str(body.get("error_type", "Exception"))
            return RemoteExecutionError(f"{error_type}: {body.get('error', '')}", error_type)
        if hasattr(exc, "add_note"):
            exc.add_note(f"raised by endpoint {self._endpoint} while streaming")
        return exc

    def finish(self) -> None:
        return None


def _expect_events(endpoint: str, status: int, headers: Headers) -> None:
    """A 2xx answer that is not an event stream: the deployed code is not this generator."""
    content_type = next((v for k, v in headers if k == b"content-type"), b"").decode("latin-1")
    if not content_type.startswith(SSE_MEDIA_TYPE):
        raise EndpointHTTPError(
            endpoint, status, f"expected a stream of items ({SSE_MEDIA_TYPE}), got "
            f"{content_type or 'no content type'}; redeploy the endpoint with this code",
        )


def stream(
    resource: ServerlessResource,
    func: Callable[..., Any],
    route: tuple[str, str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Iterator[Any]:
    """A generator function's call: arguments are checked now, the request is sent when
    iteration starts, and items come as the endpoint sends them. Closing the generator
    early closes the connection, which closes the generator on the worker."""
    method, path = route
    target, body = build_request(func, method, path, args, kwargs)
    return _stream(resource, func, method, target, body)


def _stream(
    resource: ServerlessResource, func: Callable[..., Any], method: str, target: str,
    body: bytes | None,
) -> Iterator[Any]:
    url, headers = endpoint_url(resource)
    headers = {**headers, "Accept": SSE_MEDIA_TYPE}
    try:
        response = open_response(method, url + target, body, headers, _timeout(resource))
        error = response.read() if response.status >= 400 else None
    except OSError as exc:
        raise _transport_error(resource, url, exc) from None
    if error is not None:
        _raise_for(func, resource.name, response.status, error)
    try:
        _expect_events(resource.name, response.status, response.headers)
        yield from read_items(response, _Events(func, resource.name), partial(_lost, resource, url))
    finally:
        response.close()


def astream(
    resource: ServerlessResource,
    func: Callable[..., Any],
    route: tuple[str, str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> AsyncIterator[Any]:
    """`stream` for `async def` generator functions, on the asyncio pool of the running loop
    (https endpoints, which that client does not speak, step `stream` in threads)."""
    method, path = route
    target, body = build_request(func, method, path, args, kwargs)
    return _astream(resource, func, method, target, body)


async def _astream(
    resource: ServerlessResource, func: Callable[..., Any], method: str, target: str,
    body: bytes | None,
) -> AsyncIterator[Any]:
    from runpod_flash.stubs.live import loop_pool

    if resource.endpoint_url:
        url, auth = endpoint_url(resource)
    else:  # the first call looks the endpoint up, with a blocking request
        url, auth = await asyncio.to_thread(endpoint_url, resource)
    parts = urlsplit(url + target)
    if parts.scheme != "http":
        steps = Walker(_stream(resource, func, method, target, body))
        try:
            async for item in steps:
                yield item
        finally:
            await steps.aclose()
        return
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in {**auth, "Accept": SSE_MEDIA_TYPE}.items()]
    if body is not None:
        headers.append((b"content-type", b"application/json"))
    timeout = _timeout(resource)
    try:
        response = await loop_pool().request(
            parts.hostname or "127.0.0.1", parts.port or 80, method,
            parts.path + (f"?{parts.query}" if parts.query else ""), headers, body or b"",
            Timeouts(first_byte=timeout, idle=timeout),
        )
        error = await response.read() if response.status >= 400 else None
    except OSError as exc:
        raise _transport_error(resource, url, exc) from None
    if error is not None:
        _raise_for(func, resource.name, response.status, error)
    try:
        _expect_events(resource.name, response.status, response.headers)
        items = aread_items(response, _Events(func, resource.name), partial(_lost, resource, url))
        async with contextlib.aclosing(items):
            async for item in items:
                yield item
    finally:
        await response.aclose()
