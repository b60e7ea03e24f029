"""Deployed load-balanced calls: `await process_data(5, 3)` → `POST {endpoint}/api/process`.

Arguments travel as plain JSON, so the endpoint serves curl and browsers the same way; path
parameters are filled in, GET sends the rest as query parameters.
"""

from __future__ import annotations

import builtins
import inspect
import json
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from runpod_flash.control import find_running, local_token
from runpod_flash.http.blocking import request
from runpod_flash.resources import ServerlessResource

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


def _raise_for(func: Callable[..., Any], endpoint: str, status: int, data: bytes) -> None:
    """Rebuild the remote exception when its class is known here, else an HTTP error."""
    text = data.decode(errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if status >= 500 and isinstance(body, dict) and "error_type" in body:
        module = sys.modules.get(getattr(func, "__module__", ""), None)
        candidate = getattr(module, body["error_type"], None) or getattr(
            builtins, body["error_type"], None
        )
        if isinstance(candidate, type) and issubclass(candidate, Exception):
            try:
                exc = candidate(body.get("error", ""))
            except Exception:
                exc = None
            if exc is not None:
                if hasattr(exc, "add_note"):
                    exc.add_note(f"raised by endpoint {endpoint} (HTTP {status})")
                raise exc
    raise EndpointHTTPError(endpoint, status, text)


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
    timeout = resource.execution_timeout_s or DEFAULT_TIMEOUT_S
    try:
        status, data = request(method, url + target, body, headers, timeout)
    except TimeoutError:
        raise TimeoutError(f"Execution timeout on {resource.name} after {timeout:g}s") from None
    except OSError as exc:
        raise ConnectionError(
            f"Failed to connect to endpoint {resource.name} ({url}): {exc}"
        ) from None
    if status >= 400:
        _raise_for(func, resource.name, status, data)
    return json.loads(data) if data else None
