"""What `flash run` serves, read from source exactly as `flash build` reads it.

Same scanner, ignore rules and validation messages (with file:line) as the build, so a
project that serves here builds there. No user code runs in this step: the parent checks
every edit with it before a child process imports anything.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from runpod_flash.build import BuildError, static_routes
from runpod_flash.build.ignore import collect_files
from runpod_flash.build.scanner import FunctionDecl, scan_project
from runpod_flash.build.validate import check_routes, check_unique_names, routing_warnings

NO_REMOTE_FUNCTIONS = """No @remote functions found.
Decorate a module-level function of a .py file in this project, for example:

    from runpod_flash import CpuLiveServerless, remote

    worker = CpuLiveServerless(name="worker")

    @remote(worker)
    async def hello(payload: dict) -> dict:
        return {"message": f"Hello, {payload.get('name', 'world')}!"}

or run `flash init` to create a starter project."""


class NoRemoteFunctions(BuildError):
    """The project has nothing to serve."""


@dataclass(frozen=True)
class RemoteClass:
    """A class decorated with `@remote`: not served yet (class workers are issue 10)."""

    name: str
    file: str
    line: int

    def warning(self) -> str:
        return (f"{self.file}:{self.line}: class '{self.name}' skipped: class-based @remote "
                "is not served by flash run yet (class workers, issue 10)")


@dataclass(frozen=True)
class ProjectScan:
    """The decorated functions to serve, and what to warn about."""

    functions: tuple[FunctionDecl, ...]
    classes: tuple[RemoteClass, ...]
    warnings: tuple[str, ...]


def _is_remote(decorator: ast.expr) -> bool:
    call = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(call, ast.Name) and call.id == "remote") or (
        isinstance(call, ast.Attribute) and call.attr == "remote")


def remote_classes(project_dir: Path, py_files: list[str]) -> list[RemoteClass]:
    """Classes decorated with `@remote(...)` (the build scanner reads functions only)."""
    found = []
    for rel in py_files:
        source = (project_dir / rel).read_bytes()
        if b"class" not in source or b"remote" not in source:
            continue
        for node in ast.walk(ast.parse(source, filename=rel)):
            if isinstance(node, ast.ClassDef):
                decorator = next((d for d in node.decorator_list if _is_remote(d)), None)
                if decorator is not None:
                    found.append(RemoteClass(node.name, rel, decorator.lineno))
    return found


def scan(project_dir: Path) -> ProjectScan:
    """Scan and validate the project; BuildError (file:line and fix) when it cannot serve."""
    py_files = [f for f in collect_files(project_dir) if f.endswith(".py")]
    scans = scan_project(project_dir, py_files)  # a syntax error is a BuildError at its line
    functions = [fn for module in scans.values() for fn in module.functions]
    classes = remote_classes(project_dir, py_files)
    if not functions:
        hint = "".join(f"\n  {c.warning()}" for c in classes)
        raise NoRemoteFunctions(NO_REMOTE_FUNCTIONS + hint)
    check_unique_names(functions)
    static = static_routes(scans, functions)
    check_routes(static)
    warnings = [*routing_warnings(static), *(c.warning() for c in classes)]
    return ProjectScan(tuple(functions), tuple(classes), tuple(warnings))
