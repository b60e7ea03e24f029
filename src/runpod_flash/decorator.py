"""The `@remote` decorator: validate at decoration time, then pick how a call travels."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import difflib
import functools
import inspect
import os
import re
import threading
import warnings
from collections.abc import Callable
from typing import Any

from runpod_flash.resources import ServerlessResource
from runpod_flash.streaming import is_generator_function

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
RESERVED_PATHS = ("/ping", "/execute")
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
_REMOTE_OPTIONS = (
    "resource_config", "method", "path", "dependencies", "system_dependencies",
    "accelerate_downloads", "local",
)
# Async calls run the blocking transport here, so any event loop (or none) can await them.
_call_pool = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="flash-call")

# `flash build` imports modules to read their configs; calls then must not run anything.
_BUILDING = os.environ.get("FLASH_BUILD") == "1"

# (resource class, resource name) -> {(METHOD, path): qualified function name}
_routes: dict[tuple[str, str], dict[tuple[str, str], str]] = {}
_routes_lock = threading.Lock()


class RoutingWarning(UserWarning):
    """HTTP routing options given where they have no effect."""


def _qualified(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _validate_route(
    resource: ServerlessResource, func: Callable[..., Any], method: str | None, path: str | None
) -> tuple[str, str] | None:
    """The normalised (METHOD, path) of an LB function; None for queue resources."""
    if not resource.is_load_balanced:
        if method is not None or path is not None:
            warnings.warn(
                f"HTTP routing parameters (method={method!r}, path={path!r}) of "
                f"'{func.__name__}' are only used with load-balanced resources, but "
                f"resource_config is {type(resource).__name__}. They will be ignored.",
                RoutingWarning,
                stacklevel=4,
            )
        return None
    if not method or not path:
        raise ValueError(
            f"LoadBalancerSlsResource requires both 'method' and 'path' parameters "
            f"(function '{func.__name__}'). Got method={method!r}, path={path!r}. "
            "Example: @remote(resource_config, method='POST', path='/api/process')"
        )
    normalised = method.upper() if isinstance(method, str) else method
    if normalised not in HTTP_METHODS:
        raise ValueError(
            f"Invalid HTTP method '{method}' must be one of: {', '.join(HTTP_METHODS)}"
        )
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(
            f"path must start with '/'. Got: {path!r} (function '{func.__name__}'); "
            f"use '/{str(path).lstrip('/')}'"
        )
    if path.rstrip("/") in RESERVED_PATHS:
        raise ValueError(
            f"Path '{path}' of function '{func.__name__}' is reserved by Flash "
            f"(reserved paths: {', '.join(RESERVED_PATHS)}); choose another path"
        )
    parameters = inspect.signature(func).parameters
    for name in _PATH_PARAM.findall(path):
        if name not in parameters:
            raise ValueError(
                f"Path parameter '{{{name}}}' in '{path}' is not a parameter of "
                f"{func.__name__}{inspect.signature(func)}; add '{name}' to the function "
                "or rename the path parameter"
            )
    return normalised, path


def _register_route(
    resource: ServerlessResource, func: Callable[..., Any], route: tuple[str, str]
) -> None:
    owner = _qualified(func)
    with _routes_lock:
        table = _routes.setdefault((type(resource).__name__, resource.name), {})
        existing = table.get(route)
        if existing is not None and existing != owner:
            raise ValueError(
                f"Route conflict detected: {route[0]} {route[1]} defined twice "
                f"(by '{existing}' and '{owner}' on endpoint '{resource.name}'); "
                "change the path or method of one of them"
            )
        table[route] = owner


def remote_config(
    resource: ServerlessResource,
    route: tuple[str, str] | None,
    dependencies: list[str],
    system_dependencies: list[str],
) -> dict[str, Any]:
    """The `__remote_config__` every decorated function carries (the build scanner reads it)."""
    return {
        "resource_config": resource,
        "method": route[0] if route else None,
        "path": route[1] if route else None,
        "dependencies": dependencies,
        "system_dependencies": system_dependencies,
    }


def calls_live(resource: ServerlessResource) -> bool:
    """Live resources ship code to live endpoints, except from inside a deployed worker,
    where the deployment's own endpoint of that resource is called (`stubs.peers`)."""
    if not resource.is_live:
        return False
    from runpod_flash.stubs.peers import peer_url

    return peer_url(resource.name) is None


def unwrap_remote(obj: Any) -> Any:
    """The user's own function or class behind what `@remote` returned."""
    from runpod_flash.remote_class import RemoteClass

    if isinstance(obj, RemoteFunction):
        return obj.func
    if isinstance(obj, RemoteClass):
        return obj.cls
    return obj


def _runs_in_place(resource: ServerlessResource) -> bool:
    """Inside a worker of this very resource, the function is simply called."""
    return os.environ.get("FLASH_RESOURCE_NAME") == resource.name and bool(
        os.environ.get("FLASH_WORKER_ID")
    )


class RemoteFunction:
    """A function whose calls run on the resource's workers.

    `def` functions block and return the value; `async def` functions return an awaitable.
    On a load-balanced resource, a generator function (`def`/`async def` with `yield`)
    returns a generator / async generator that streams the remote items as they come.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        resource: ServerlessResource,
        route: tuple[str, str] | None,
        dependencies: list[str],
        system_dependencies: list[str],
        accelerate_downloads: bool,
    ) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.resource = resource
        self.route = route
        self.dependencies = dependencies
        self.system_dependencies = system_dependencies
        self.accelerate_downloads = accelerate_downloads
        self.is_async = inspect.iscoroutinefunction(func)
        # Deployed queue resources keep their old behaviour: the list of items, as a job output.
        self.streams = resource.is_load_balanced and is_generator_function(func)
        self._shipped: tuple[str, str] | None = None
        self._live_endpoint: Any = None  # stubs.live.LiveEndpoint, looked up on first call
        self._ship_lock = threading.Lock()
        self.__remote_config__ = remote_config(resource, route, dependencies, system_dependencies)
        if self.is_async and hasattr(inspect, "markcoroutinefunction"):
            inspect.markcoroutinefunction(self)

    def __repr__(self) -> str:
        return f"<remote {self.func.__qualname__} on {type(self.resource).__name__} " \
               f"'{self.resource.name}'>"

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self if instance is None else functools.partial(self, instance)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled into another process, the decorator is applied again there."""
        options = {
            "method": self.route[0] if self.route else None,
            "path": self.route[1] if self.route else None,
            "dependencies": self.dependencies,
            "system_dependencies": self.system_dependencies,
            "accelerate_downloads": self.accelerate_downloads,
        }
        return (_rebuild, (self.func, self.resource, options))

    def shipped(self) -> tuple[str, str]:
        """The function pickled by value and its hash, computed once."""
        if self._shipped is None:
            from runpod_flash import serialization

            with self._ship_lock:
                if self._shipped is None:
                    self._shipped = serialization.encode_function(self.func)
        return self._shipped

    def _endpoint(self) -> Any:
        """The live endpoint of this resource and dependency set (looked up once)."""
        if self._live_endpoint is None:
            from runpod_flash.stubs import live

            code = getattr(self.func, "__code__", None)
            origin = (code.co_filename, code.co_firstlineno) if code else ("<remote>", 0)
            self._live_endpoint = live.endpoint_for(
                self.resource, self.dependencies, self.system_dependencies, origin
            )
        return self._live_endpoint

    def _call_blocking(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from runpod_flash.stubs import http_route, live, queue

        if calls_live(self.resource):
            call = live.call if self.resource.is_load_balanced else queue.call_live
            return call(self._endpoint(), self.shipped, self.func.__name__, self.func.__module__,
                        self.resource.execution_timeout_s, args, kwargs)
        if self.route is None:
            return queue.call_deployed(self.resource, self.func, args, kwargs)
        return http_route.call(self.resource, self.func, self.route, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _BUILDING:
            raise RuntimeError(
                f"'{self.func.__name__}' was called while `flash build` imported its module; "
                "a call at import time would provision endpoints. Move it under "
                "`if __name__ == \"__main__\":`"
            )
        if self.streams:
            return self._stream(args, kwargs)
        if self.is_async:
            return self._call_async(args, kwargs)
        return self._call_blocking(args, kwargs)

    def _stream(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A generator (async generator for `async def`) of the remote items; the arguments
        are checked now, the request goes out when iteration starts."""
        from runpod_flash.stubs import http_route, live

        asynchronous = inspect.isasyncgenfunction(self.func)
        if calls_live(self.resource):
            inspect.signature(self.func).bind(*args, **kwargs)  # TypeError now, as locally
            start = live.astream if asynchronous else live.stream
            return start(self._endpoint(), self.shipped, self.func.__name__,
                         self.func.__module__, self.resource.execution_timeout_s, args, kwargs)
        assert self.route is not None  # load-balanced resources always have one
        start = http_route.astream if asynchronous else http_route.stream
        return start(self.resource, self.func, self.route, args, kwargs)

    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.resource.is_load_balanced and calls_live(self.resource):
            from runpod_flash.stubs import live

            return await live.acall(self._endpoint(), self.shipped, self.func.__name__,
                                    self.func.__module__, self.resource.execution_timeout_s,
                                    args, kwargs)
        loop = asyncio.get_running_loop()
        # The caller's contextvars go along, as with asyncio.to_thread (`flash run` tags the
        # replayed worker output with them).
        call = functools.partial(contextvars.copy_context().run, self._call_blocking, args, kwargs)
        return await loop.run_in_executor(_call_pool, call)


def _refuse_live_queue_generator(resource: ServerlessResource, func: Callable[..., Any]) -> None:
    """Items stream over HTTP; a live queue job has one result, which a generator is not."""
    if resource.is_live and not resource.is_load_balanced and is_generator_function(func):
        raise TypeError(
            f"'{func.__name__}' is a generator function, and generator functions stream their "
            f"items only on load-balanced resources (LiveLoadBalancer, CpuLiveLoadBalancer, "
            f"LoadBalancerSlsResource, CpuLoadBalancerSlsResource); on "
            f"{type(resource).__name__} '{resource.name}', return a list instead"
        )


def _rebuild(func: Callable[..., Any], resource: ServerlessResource, options: dict[str, Any]):
    return _decorate(func, resource, validate=False, **options)


def _decorate(
    func: Callable[..., Any],
    resource: ServerlessResource,
    *,
    method: str | None = None,
    path: str | None = None,
    dependencies: list[str] | None = None,
    system_dependencies: list[str] | None = None,
    accelerate_downloads: bool = True,
    local: bool = False,
    validate: bool = True,
) -> Any:
    if inspect.isclass(func):
        from runpod_flash.remote_class import decorate_class

        return decorate_class(func, resource, list(dependencies or []),
                              list(system_dependencies or []), local=local)
    if not callable(func):
        raise TypeError(f"@remote decorates functions; got {type(func).__name__}")
    route = (
        _validate_route(resource, func, method, path)
        if validate
        else ((method, path) if method and path else None)
    )
    if validate and route is not None:
        _register_route(resource, func, route)
    if validate and not local:
        _refuse_live_queue_generator(resource, func)
    deps, system_deps = list(dependencies or []), list(system_dependencies or [])
    if local or _runs_in_place(resource):
        func.__remote_config__ = remote_config(  # type: ignore[attr-defined]
            resource, route, deps, system_deps
        )
        return func
    return RemoteFunction(func, resource, route, deps, system_deps, accelerate_downloads)


def _check_list(name: str, value: Any) -> None:
    if value is not None and (
        isinstance(value, str) or not all(isinstance(item, str) for item in value)
    ):
        raise TypeError(f"{name} must be a list of strings, e.g. {name}=['numpy==2.1.0']")


def remote(
    resource_config: ServerlessResource,
    method: str | None = None,
    path: str | None = None,
    dependencies: list[str] | None = None,
    system_dependencies: list[str] | None = None,
    accelerate_downloads: bool = True,
    local: bool = False,
    **unexpected: Any,
) -> Callable[[Callable[..., Any]], Any]:
    """Run the decorated function on the workers of `resource_config`."""
    if unexpected:
        name = next(iter(unexpected))
        close = difflib.get_close_matches(name, _REMOTE_OPTIONS, n=1)
        hint = f". Did you mean '{close[0]}'?" if close else (
            f"; valid options are: {', '.join(_REMOTE_OPTIONS[1:])}"
        )
        raise TypeError(f"remote() got an unexpected keyword argument '{name}'{hint}")
    if not isinstance(resource_config, ServerlessResource):
        raise TypeError(
            "remote() needs a resource as its first argument, e.g. "
            f"@remote(LiveLoadBalancer(name='api'), ...); got {type(resource_config).__name__}"
        )
    _check_list("dependencies", dependencies)
    _check_list("system_dependencies", system_dependencies)

    def decorator(func: Callable[..., Any]) -> Any:
        return _decorate(
            func, resource_config, method=method, path=path, dependencies=dependencies,
            system_dependencies=system_dependencies,
            accelerate_downloads=accelerate_downloads, local=local,
        )

    return decorator
