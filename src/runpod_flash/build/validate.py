"""Route and naming rules, with the decorator's messages prefixed by `file:line`.

Checked from source before anything is imported (so the message points at the decorator, not
at an import failure), and again with the live values once the import has run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import BuildError
from .scanner import FunctionDecl

# The same rules as runpod_flash.decorator; kept here so a build does not import pydantic.
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
RESERVED_PATHS = ("/ping", "/execute")
PATH_PARAMETER = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


@dataclass(frozen=True)
class Route:
    """One function's routing as far as it is known: resource None means not known yet."""

    function: FunctionDecl
    resource: str | None
    load_balanced: bool
    method: str | None
    path: str | None


def _where(function: FunctionDecl) -> str:
    return f"{function.file}:{function.line}"


def check_unique_names(functions: Iterable[FunctionDecl]) -> None:
    """Functions are looked up by name on the workers, so names must be project-unique."""
    seen: dict[str, FunctionDecl] = {}
    for function in functions:
        first = seen.setdefault(function.name, function)
        if first is not function:
            raise BuildError(
                f"{_where(function)}: Duplicate function name '{function.name}' (also defined "
                f"at {_where(first)}); @remote function names must be unique across the "
                "project: rename one, or add one of the files to .flashignore"
            )


def _check_route(route: Route) -> tuple[str, str]:
    """The normalised (METHOD, path) of one load-balanced function."""
    fn, method, path = route.function, route.method, route.path
    where = _where(fn)
    if not method or not path:
        raise BuildError(
            f"{where}: LoadBalancerSlsResource requires both 'method' and 'path' parameters "
            f"(function '{fn.name}'). Got method={method!r}, path={path!r}. "
            "Example: @remote(resource_config, method='POST', path='/api/process')"
        )
    if method.upper() not in HTTP_METHODS:
        raise BuildError(
            f"{where}: Invalid HTTP method '{method}' must be one of: "
            f"{', '.join(HTTP_METHODS)} (function '{fn.name}')"
        )
    if not path.startswith("/"):
        raise BuildError(
            f"{where}: path must start with '/'. Got: {path!r} (function '{fn.name}'); "
            f"use '/{path.lstrip('/')}'"
        )
    if path.rstrip("/") in RESERVED_PATHS:
        raise BuildError(
            f"{where}: Path '{path}' of function '{fn.name}' is reserved by Flash "
            f"(reserved paths: {', '.join(RESERVED_PATHS)}); choose another path"
        )
    for name in PATH_PARAMETER.findall(path):
        if name not in fn.params:
            raise BuildError(
                f"{where}: Path parameter '{{{name}}}' in '{path}' is not a parameter of "
                f"{fn.name}({', '.join(fn.params)}); add '{name}' to the function or rename "
                "the path parameter"
            )
    return method.upper(), path


def check_routes(routes: Iterable[Route]) -> None:
    """Each load-balanced function has a valid route, and no two share one on an endpoint."""
    owners: dict[tuple[str, str, str], FunctionDecl] = {}
    for route in routes:
        if not route.load_balanced:
            continue
        if route.function.is_class:
            raise BuildError(
                f"{_where(route.function)}: @remote on class '{route.function.name}': classes "
                f"run on queue-based resources (LiveServerless, CpuLiveServerless, "
                f"ServerlessEndpoint, CpuServerlessEndpoint); resource '{route.resource}' is "
                "load-balanced. Use a queue-based resource for the class"
            )
        method, path = _check_route(route)
        if route.resource is None:
            continue
        fn = route.function
        first = owners.setdefault((route.resource, method, path), fn)
        if first is not fn:
            raise BuildError(
                f"{_where(fn)}: Route conflict detected: {method} {path} defined twice "
                f"(by '{first.name}' at {_where(first)} and '{fn.name}' at {_where(fn)} on "
                f"endpoint '{route.resource}'); change the path or method of one of them"
            )


def routing_warnings(routes: Iterable[Route]) -> list[str]:
    """Method/path given on queue-based resources, where they have no effect."""
    return [
        f"{_where(r.function)}: method/path of '{r.function.name}' are ignored: resource "
        f"'{r.resource}' is not load-balanced"
        for r in routes
        if not r.load_balanced and (r.method or r.path)
    ]
