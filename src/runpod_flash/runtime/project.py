"""A deployed worker's project: the unpacked artifact, its manifest entry and its functions.

Shared by the load-balanced worker (routes) and the queue worker (jobs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runpod_flash.decorator import unwrap_remote
from runpod_flash.project_modules import import_project_module

MANIFEST_FILE = "flash_manifest.json"


def resource_entry(app_dir: Path, resource_name: str) -> dict[str, Any]:
    """The resource's manifest entry; app_dir goes first on `sys.path` (its modules win)."""
    path = app_dir / MANIFEST_FILE
    try:
        resources = json.loads(path.read_text())["resources"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"Cannot read the build manifest {path}: {exc}") from exc
    if resource_name not in resources:
        raise RuntimeError(
            f"Resource '{resource_name}' is not in {path} (it has: "
            f"{', '.join(sorted(resources)) or 'none'}); rebuild and redeploy the project"
        )
    entry = str(app_dir)
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
    return resources[resource_name]  # type: ignore[no-any-return]


def load_function(app_dir: Path, module_name: str, name: str, resource_name: str
                  ) -> Callable[..., Any]:
    """The user's own function (or class), unwrapped where `@remote` wrapped it."""
    try:
        module = import_project_module(module_name, app_dir)
    except Exception as exc:
        raise RuntimeError(
            f"Cannot import module '{module_name}' for resource '{resource_name}': "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    func = getattr(module, name, None)
    if func is None:
        raise RuntimeError(
            f"Module '{module_name}' has no function '{name}' (resource '{resource_name}'); "
            "rebuild the project so the manifest matches the code"
        )
    return unwrap_remote(func)  # type: ignore[no-any-return]
