"""The dev server's route table: which local URL calls which `@remote` function.

The contract the public Flash examples curl: a file `a/b/worker.py` gets the prefix
`/a/b/worker`; its queue functions are `POST {prefix}/runsync` when it has one of them and
`POST {prefix}/{function}/runsync` when it has several; its load-balanced functions keep
their own method and path under the prefix. A class's methods are always
`POST {prefix}/{method}/runsync`.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runpod_flash.build import BuildError
from runpod_flash.build.scanner import FunctionDecl

_PATH_PARAMETER = re.compile(r"\{[^}]*\}")


class Kind(str, enum.Enum):
    """How a function is reached: a queue job (runsync envelope) or its own HTTP route."""

    QUEUE = "QB"
    LOAD_BALANCED = "LB"


@dataclass(frozen=True)
class DevRoute:
    """One local route and the function it calls."""

    method: str
    path: str
    decl: FunctionDecl
    target: Any  # the module attribute: a RemoteFunction, or the function itself (local=True)
    kind: Kind
    endpoint: str  # the resource's name
    mode: str  # "live", "deployed" or "local"

    @property
    def summary(self) -> str:
        """The first line of the function's docstring (the /docs summary)."""
        return (inspect.getdoc(self.target) or "").strip().split("\n", 1)[0]

    @property
    def where(self) -> str:
        return f"{self.decl.file}:{self.decl.line}"

    def describe(self) -> dict[str, str]:
        """The route as `/` lists it (and as the parent prints it)."""
        return {
            "method": self.method, "path": self.path, "function": self.decl.name,
            "file": self.decl.file, "endpoint": self.endpoint,
            "type": self.kind.value if self.mode == "live" else f"{self.kind.value} {self.mode}",
        }


def prefix(rel_file: str) -> str:
    """`a/b/worker.py` -> `/a/b/worker`."""
    return "/" + rel_file.removesuffix(".py")


def _mode(target: Any, resource: Any) -> str:
    if not hasattr(target, "resource"):  # local=True: the decorator returned the function
        return "local"
    return "live" if resource.is_live else "deployed"


def plan_routes(found: Iterable[tuple[FunctionDecl, Any]]) -> list[DevRoute]:
    """The routes of the imported functions; a route taken twice is a BuildError at file:line."""
    found = list(found)
    queue_per_file: dict[str, int] = {}
    for decl, target in found:
        config = target.__remote_config__
        if not config["resource_config"].is_load_balanced and not decl.is_class:
            queue_per_file[decl.file] = queue_per_file.get(decl.file, 0) + 1
    routes = []
    for decl, target in found:
        config = target.__remote_config__
        resource = config["resource_config"]
        base = prefix(decl.file)
        if resource.is_load_balanced:
            method, path, kind = config["method"], base + config["path"], Kind.LOAD_BALANCED
        else:
            several = queue_per_file.get(decl.file, 0) > 1
            method, kind = "POST", Kind.QUEUE
            name = getattr(target, "class_method", None)  # a class's methods: always named
            if name is None:
                name = decl.name if several else None
            path = f"{base}/{name}/runsync" if name else f"{base}/runsync"
        routes.append(DevRoute(method, path, decl, target, kind, resource.name,
                               _mode(target, resource)))
    _check_conflicts(routes)
    return routes


def _check_conflicts(routes: list[DevRoute]) -> None:
    """Two functions on one local route (e.g. `a.py` path `/b/runsync` and `a/b.py`)."""
    owners: dict[tuple[str, str], DevRoute] = {}
    for route in routes:
        key = (route.method, _PATH_PARAMETER.sub("{}", route.path))
        first = owners.setdefault(key, route)
        if first is not route:
            raise BuildError(
                f"{route.where}: Route conflict detected: {route.method} {route.path} defined "
                f"twice (by '{first.decl.name}' at {first.where} and '{route.decl.name}' at "
                f"{route.where}); change the path or method of one of them, or rename a file"
            )
