"""Importing the project in the server process: the scanned functions' live objects.

Errors read like the build's (`Cannot import module 'x' (file:line): ...` with a hint), as
they come from the same formatting.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runpod_flash.build import BuildError
from runpod_flash.build._import_child import import_failure
from runpod_flash.build.guarded_import import import_error
from runpod_flash.build.ignore import collect_files
from runpod_flash.build.scanner import FunctionDecl
from runpod_flash.devserver.scan import scan


def _import_module(project_dir: Path, decl: FunctionDecl) -> None:
    """Import a project module by its dotted path. A module under a folder whose name is not
    an identifier (`01_getting_started/`) can only be imported by that path, not written in
    an import statement, so like the original its folder is on sys.path meanwhile, for its
    own sibling imports."""
    folder = str(project_dir / Path(decl.file).parent)
    numbered = not all(part.isidentifier() for part in decl.module.split("."))
    if numbered:
        sys.path.insert(1, folder)
    try:
        importlib.import_module(decl.module)
    finally:
        if numbered and folder in sys.path:
            sys.path.remove(folder)


def import_project(
    project_dir: Path, warn: Callable[[str], None]
) -> list[tuple[FunctionDecl, Any]]:
    """Each scanned function with the object its module defines (classes skipped, warned)."""
    project = scan(project_dir)
    for message in project.warnings:
        warn(message)
    files = set(collect_files(project_dir))
    failed: set[str] = set()
    found = []
    for decl in project.functions:
        if decl.module in failed:
            continue
        if decl.module not in sys.modules:
            try:
                _import_module(project_dir, decl)
            except BaseException as exc:  # SystemExit at import time is a failure too
                if not any(c.file == decl.file for c in project.classes):
                    failure = import_failure(decl.module, exc)
                    raise import_error(failure, project_dir, files) from None
                failed.add(decl.module)
                warn(f"{decl.file}: skipped, it cannot be imported while it declares a "
                     f"class-based @remote (issue 10): {type(exc).__name__}: {exc}")
                continue
        target = getattr(sys.modules[decl.module], decl.name, None)
        if inspect.isclass(target):
            continue  # warned by the scan
        if not hasattr(target, "__remote_config__"):
            raise BuildError(
                f"{decl.file}:{decl.line}: after import, module '{decl.module}' has no "
                f"@remote function named '{decl.name}'; define it at module level and do not "
                "rebind the name"
            )
        found.append((decl, target))
    return found
