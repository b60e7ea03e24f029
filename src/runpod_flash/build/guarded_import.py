"""Import the project once, in a child interpreter, to read the live resource configs.

A child process keeps user code (its globals, its side effects, a crash) out of the build,
and one child for the whole project keeps the cost to one interpreter start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BuildError
from .scanner import FunctionDecl

IMPORT_TIMEOUT_S = 60.0
_CHILD = Path(__file__).with_name("_import_child.py")


@dataclass(frozen=True)
class LiveResource:
    """The resource object a decorated function was bound to, as the child process saw it."""

    name: str
    resource_type: str
    is_live: bool
    is_load_balanced: bool
    spec: dict[str, Any]


@dataclass(frozen=True)
class LiveFunction:
    """A decorated function's `__remote_config__`, read after import."""

    resource: LiveResource
    method: str | None
    path: str | None
    dependencies: tuple[str, ...]
    system_dependencies: tuple[str, ...]


def _project_frame(frames: list[list[Any]], project_dir: Path, files: set[str]) -> str | None:
    """`file:line` of the innermost traceback frame in a project file, if there is one."""
    for filename, line in reversed(frames):
        try:
            rel = Path(filename).resolve().relative_to(project_dir).as_posix()
        except ValueError:
            continue
        if rel in files:
            return f"{rel}:{line}"
    return None


def import_error(failure: dict[str, Any], project_dir: Path, files: set[str]) -> BuildError:
    where = _project_frame(failure["frames"], project_dir, files)
    missing = failure["missing_module"]
    if missing:
        hint = (
            f"install '{missing.split('.')[0]}' in this environment, fix the import, or import "
            "it inside the @remote function that needs it"
        )
    else:
        hint = (
            "fix the error at that line; modules are imported at build time to read their "
            "resource configs, so module-level code must run without a platform"
        )
    place = f" ({where})" if where else ""
    return BuildError(
        f"Cannot import module '{failure['module']}'{place}: {failure['summary']}\n  Hint: {hint}"
    )


def _live(record: dict[str, Any] | None) -> LiveFunction | None:
    if record is None:
        return None
    return LiveFunction(
        resource=LiveResource(**record["resource"]),
        method=record["method"],
        path=record["path"],
        dependencies=tuple(record["dependencies"]),
        system_dependencies=tuple(record["system_dependencies"]),
    )


def _run_child(project_dir: Path, request: dict[str, Any], timeout: float) -> list[dict]:
    """The child's JSON records; raises BuildError if it hangs or dies without reporting."""
    with tempfile.TemporaryDirectory(prefix="flash-build-") as tmp:
        request_file, records_file = Path(tmp, "request.json"), Path(tmp, "records.jsonl")
        request_file.write_text(json.dumps(request), encoding="utf-8")
        records_file.touch()
        with Path(tmp, "stderr.txt").open("w+b") as stderr:
            child = subprocess.Popen(
                [sys.executable, str(_CHILD), str(request_file), str(records_file)],
                cwd=project_dir,
                env={**os.environ, "FLASH_BUILD": "1"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # so a timeout also stops what user code started
            )
            try:
                child.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                timed_out = True
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace").strip().splitlines()
        lines = records_file.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    if any("functions" in r or "failed" in r for r in records):
        return records
    importing = next((r["importing"] for r in reversed(records) if "importing" in r), "?")
    if timed_out:
        raise BuildError(
            f"Importing module '{importing}' did not finish within {timeout:g} s; move slow or "
            "blocking module-level code into functions or under `if __name__ == \"__main__\":`"
        )
    raise BuildError(
        f"Cannot import module '{importing}': the import process exited with code "
        f"{child.returncode} ({errors[-1] if errors else 'no output'})"
    )


def import_project(
    project_dir: Path,
    functions: list[FunctionDecl],
    files: set[str],
    timeout: float = IMPORT_TIMEOUT_S,
) -> dict[FunctionDecl, LiveFunction | None]:
    """Each decorated function's live config (None where the module has no such attribute)."""
    project_dir = project_dir.resolve()
    modules = list(dict.fromkeys(fn.module for fn in functions))
    request = {"modules": modules, "functions": [[fn.module, fn.name] for fn in functions]}
    records = _run_child(project_dir, request, timeout)
    failed = next((r["failed"] for r in records if "failed" in r), None)
    if failed is not None:
        raise import_error(failed, project_dir, files)
    described = next(r["functions"] for r in records if "functions" in r)
    return {fn: _live(record) for fn, record in zip(functions, described, strict=True)}
