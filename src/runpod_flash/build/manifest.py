"""The build manifest: which functions run on which endpoint, their routes and settings."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runpod_flash.dependencies import split_framework

from .errors import BuildError
from .guarded_import import LiveFunction, LiveResource
from .scanner import FunctionDecl

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

MANIFEST_VERSION = "1.0"
REQUIREMENTS_FILE = "requirements.txt"
PYPROJECT_FILE = "pyproject.toml"


@dataclass
class ResourceGroup:
    """One endpoint and its functions, in source order."""

    resource: LiveResource
    functions: list[FunctionDecl] = field(default_factory=list)
    live: list[LiveFunction] = field(default_factory=list)


def group_by_resource(
    functions: list[FunctionDecl], live: dict[FunctionDecl, LiveFunction]
) -> dict[str, ResourceGroup]:
    """Functions grouped by resource name; one name must mean one configuration."""
    groups: dict[str, ResourceGroup] = {}
    for fn in functions:
        resource = live[fn].resource
        group = groups.setdefault(resource.name, ResourceGroup(resource))
        if (group.resource.resource_type, group.resource.spec) != (
            resource.resource_type, resource.spec
        ):
            first = group.functions[0]
            raise BuildError(
                f"{fn.file}:{fn.line}: resource name '{resource.name}' is configured twice "
                f"with different settings ('{first.name}' at {first.file}:{first.line} uses "
                f"the other); give each config its own name or share one config object"
            )
        group.functions.append(fn)
        group.live.append(live[fn])
    return groups


def read_requirements(
    project_dir: Path, warn: Callable[[str], None] = lambda _: None
) -> list[str]:
    """The project's requirements, less Flash itself (reported once through `warn`).

    They come from requirements.txt (as in the original Flash) or, when a project has none,
    from pyproject.toml's `[project] dependencies`; both files usually say the same, and
    requirements.txt is the one that pins. Workers already run with the interpreter that has
    openflash; installing `runpod-flash` (as original projects list it) or `openflash` from an
    index into their environments would shadow it, as the original strips it when packaging.
    """
    path = project_dir / REQUIREMENTS_FILE
    if path.is_file():
        lines = (line.split(" #")[0].strip() for line in path.read_text("utf-8").splitlines())
        listed = [line for line in lines if line and not line.startswith("#")]
    else:
        path = project_dir / PYPROJECT_FILE
        listed = _pyproject_dependencies(path) if path.is_file() else []
    kept, dropped = split_framework(listed)
    if dropped:
        warn(f"{path.name}: {', '.join(dropped)} left out of worker environments: workers "
             "already run with this openflash, and the package from the index would shadow it")
    return kept


def _pyproject_dependencies(path: Path) -> list[str]:
    """`[project] dependencies` of a pyproject.toml."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path.name} is not valid TOML ({exc}); fix the file") from None
    project = data.get("project")
    dependencies = project.get("dependencies", []) if isinstance(project, dict) else []
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise BuildError(
            f"{path.name}: [project] dependencies must be a list of requirement strings"
        )
    return [d.strip() for d in dependencies if d.strip()]


def _function_entry(fn: FunctionDecl, live: LiveFunction) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": fn.name, "module": fn.module, "is_async": fn.is_async, "is_class": fn.is_class,
    }
    if fn.is_class:
        entry["methods"] = [
            {"name": m.name, "is_async": m.is_async, "params": list(m.params), "doc": m.doc}
            for m in fn.methods
        ]
    if fn.is_generator:  # only then, so the entries of plain functions keep their shape
        entry["is_generator"] = True
    if live.resource.is_load_balanced:
        entry.update(http_method=live.method, http_path=live.path)
    return entry


def _resource_entry(
    group: ResourceGroup, spec: dict[str, Any], decorated: set[str], requirements: list[str]
) -> dict[str, Any]:
    first = group.functions[0]
    return {
        "resource_type": group.resource.resource_type,
        "file_path": first.file,
        "module_path": first.module,
        "config_variable": first.resource_ref,
        "functions": [
            _function_entry(fn, lf)
            for fn, lf in zip(group.functions, group.live, strict=True)
        ],
        "is_load_balanced": group.resource.is_load_balanced,
        "is_live_resource": group.resource.is_live,
        "makes_remote_calls": any(fn.calls & (decorated - {fn.name}) for fn in group.functions),
        "dependencies": sorted({*requirements, *(d for lf in group.live for d in lf.dependencies)}),
        "system_dependencies": sorted({d for lf in group.live for d in lf.system_dependencies}),
        "spec": spec,
    }


def build_manifest(
    project_name: str,
    groups: dict[str, ResourceGroup],
    specs: dict[str, dict[str, Any]],
    requirements: list[str],
) -> dict[str, Any]:
    decorated = {fn.name for group in groups.values() for fn in group.functions}
    routes = {
        name: {
            f"{lf.method} {lf.path}": fn.name
            for fn, lf in zip(g.functions, g.live, strict=True)
        }
        for name, g in groups.items()
        if g.resource.is_load_balanced
    }
    return {
        "version": MANIFEST_VERSION,
        "generated_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "project_name": project_name,
        "resources": {
            name: _resource_entry(group, specs[name], decorated, requirements)
            for name, group in groups.items()
        },
        "function_registry": {
            fn.name: name for name, group in groups.items() for fn in group.functions
        },
        "routes": routes,
    }


HANDLER_DEFAULTS: dict[str, Any] = {
    "kind": "deployed", "type": "QB", "cpu": True, "gpuCount": 0, "gpuIds": "",
    "workersMin": 0, "workersMax": 1, "idleTimeout": 60, "scalerType": "QUEUE_DELAY",
    "scalerValue": 4, "executionTimeoutMs": 0, "env": {}, "concurrency": 1,
}


def add_handlers(
    manifest: dict[str, Any],
    handlers: dict[str, dict[str, Any]],
    files: set[str],
    requirements: list[str],
) -> None:
    """Queue endpoints served by a plain Runpod worker script (`[handlers.<name>]`)."""
    for name, table in handlers.items():
        if name in manifest["resources"]:
            raise BuildError(
                f"flash.toml: [handlers.\"{name}\"] has the name of an @remote resource; "
                "give the handler endpoint another name"
            )
        if table["file"] not in files:
            raise BuildError(
                f"flash.toml: [handlers.\"{name}\"] file '{table['file']}' is not in the "
                "project (or is ignored); give its path relative to the project directory"
            )
        settings = {k: v for k, v in table.items() if k != "file"}
        manifest["resources"][name] = {
            "resource_type": "RunpodHandler",
            "handler_file": table["file"],
            "functions": [],
            "is_load_balanced": False,
            "is_live_resource": False,
            "makes_remote_calls": False,
            "dependencies": sorted(requirements),
            "system_dependencies": [],
            "spec": {**HANDLER_DEFAULTS, **settings, "name": name},
        }


def manifest_json(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode()


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Written whole or not at all, so a reader never sees half a manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(manifest_json(manifest))
    os.replace(partial, path)
