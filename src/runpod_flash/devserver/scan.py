"""What `flash run` serves, read from source exactly as `flash build` reads it.

Same scanner, ignore rules and validation messages (with file:line) as the build, so a
project that serves here builds there. No user code runs in this step: the parent checks
every edit with it before a child process imports anything.
"""

from __future__ import annotations

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
class ProjectScan:
    """The decorated functions (and classes) to serve, and what to warn about."""

    functions: tuple[FunctionDecl, ...]
    warnings: tuple[str, ...]


def scan(project_dir: Path) -> ProjectScan:
    """Scan and validate the project; BuildError (file:line and fix) when it cannot serve."""
    py_files = [f for f in collect_files(project_dir) if f.endswith(".py")]
    scans = scan_project(project_dir, py_files)  # a syntax error is a BuildError at its line
    functions = [fn for module in scans.values() for fn in module.functions]
    if not functions:
        raise NoRemoteFunctions(NO_REMOTE_FUNCTIONS)
    check_unique_names(functions)
    static = static_routes(scans, functions)
    check_routes(static)
    return ProjectScan(tuple(functions), tuple(routing_warnings(static)))
