"""Deploying a project to the platform: build, upload the artifact, roll out, wait.

Shared by `flash deploy` and `await resource.deploy()`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runpod_flash.control import Platform, PlatformError, ensure_platform

UPLOAD_TIMEOUT_S = 600.0
DEPLOY_TIMEOUT_S = 1800.0


class DeployError(RuntimeError):
    """The deployment failed; endpoints that were serving keep serving their old version."""


def deploy_project(
    project_dir: Path,
    only: list[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[Platform, list[dict[str, Any]]]:
    """Build `project_dir` and deploy its load-balanced endpoints; returns their results."""
    from runpod_flash.build import build_project

    result = build_project(project_dir, progress)
    platform = ensure_platform()
    try:
        platform.call("PUT", f"/api/v1/artifacts/{result.artifact_sha256}",
                      raw=result.artifact_path.read_bytes(), timeout=UPLOAD_TIMEOUT_S)
        progress(f"uploaded artifact {result.artifact_sha256[:12]}")
        deployment = platform.call("POST", "/api/v1/deployments", {
            "artifact": result.artifact_sha256, "python": sys.executable, "resources": only,
        })
        shown = 0
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while deployment["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            deployment = platform.call("GET", f"/api/v1/deployments/{deployment['id']}")
            for line in deployment["progress"][shown:]:
                progress(line)
            shown = len(deployment["progress"])
    except PlatformError as exc:
        raise DeployError(str(exc)) from None
    for line in deployment["progress"][shown:]:
        progress(line)
    if deployment["status"] != "succeeded":
        raise DeployError(deployment.get("error") or f"deployment is {deployment['status']}")
    return platform, deployment["results"]


def deploy_resource(resource: Any) -> str:
    """Deploy one resource from the project of the running script; returns its URL."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    project_dir = Path(main_file).resolve().parent if main_file else Path.cwd()
    platform, results = deploy_project(project_dir, only=[resource.name])
    if not results:
        raise DeployError(
            f"'{resource.name}' was not deployed: only load-balanced resources deploy so far"
        )
    return platform.url + results[0]["path"]
