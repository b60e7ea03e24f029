"""Importing the project in the server process: the scanned functions' live objects.

Errors read like the build's (`Cannot import module 'x' (file:line): ...` with a hint), as
they come from the same formatting.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runpod_flash.build import BuildError
from runpod_flash.build._import_child import import_failure
from runpod_flash.build.guarded_import import import_error
from runpod_flash.build.ignore import collect_files
from runpod_flash.build.scanner import FunctionDecl
from runpod_flash.devserver.scan import scan
from runpod_flash.project_modules import import_project_module


def import_project(
    project_dir: Path, warn: Callable[[str], None]
) -> list[tuple[FunctionDecl, Any]]:
    """Each scanned function with the object its module defines; a class gives one entry
    per public method (`class_methods`)."""
    project = scan(project_dir)
    for message in project.warnings:
        warn(message)
    files = set(collect_files(project_dir))
    found = []
    for decl in project.functions:
        if decl.module not in sys.modules:
            try:
                import_project_module(decl.module, project_dir)
            except BaseException as exc:  # SystemExit at import time is a failure too
                failure = import_failure(decl.module, exc)
                raise import_error(failure, project_dir, files) from None
        target = getattr(sys.modules[decl.module], decl.name, None)
        if not hasattr(target, "__remote_config__"):
            raise BuildError(
                f"{decl.file}:{decl.line}: after import, module '{decl.module}' has no "
                f"@remote {'class' if decl.is_class else 'function'} named '{decl.name}'; "
                "define it at module level and do not rebind the name"
            )
        found.extend(class_methods(decl, target) if decl.is_class else [(decl, target)])
    return found


def class_methods(decl: FunctionDecl, target: Any) -> list[tuple[FunctionDecl, Any]]:
    """One callable per public method of a decorated class, on one instance made now with
    no arguments (as the original `flash run` does): its state lasts while the server runs
    this version of the code."""
    handle = target()
    cls = getattr(target, "cls", target)
    methods = []
    for method in decl.methods:
        function = getattr(cls, method.name)
        proxy = _method_proxy(getattr(handle, method.name), function)
        proxy.class_method = method.name  # type: ignore[attr-defined]
        for name in ("resource", "dependencies", "system_dependencies", "__remote_config__"):
            if hasattr(target, name):
                setattr(proxy, name, getattr(target, name))
        methods.append((dataclasses.replace(decl, name=f"{decl.name}.{method.name}"), proxy))
    return methods


def _method_proxy(bound: Callable[..., Any], function: Callable[..., Any]
                  ) -> Callable[..., Any]:
    """An `async def` with the method's signature less `self` and its annotations resolved
    (the routes read both), which awaits the handle's method (or calls the local one)."""

    async def proxy(**kwargs: Any) -> Any:
        value = bound(**kwargs)
        return await value if inspect.isawaitable(value) else value

    try:
        hints = typing.get_type_hints(function)
    except Exception:  # an annotation only a type checker can resolve: the routes warn
        hints = dict(getattr(function, "__annotations__", {}))
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in list(signature.parameters.values())[1:]]
    proxy.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=hints.get("return", signature.return_annotation)
    )
    proxy.__name__ = function.__name__
    proxy.__qualname__ = function.__qualname__
    proxy.__doc__ = function.__doc__
    proxy.__module__ = function.__module__
    return proxy
