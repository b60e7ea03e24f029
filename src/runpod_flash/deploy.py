"""Deploying a project to the platform: build, upload the artifact, roll out, wait.

Shared by `flash deploy` and `await resource.deploy()`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runpod_flash.control import Platform, PlatformError, ensure_platform
from runpod_flash.dependencies import (
    APPROVED_KEY,
    SystemPackagesRefused,
    approve_system_packages,
)

if TYPE_CHECKING:
    from runpod_flash.build import BuildResult

UPLOAD_TIMEOUT_S = 600.0
DEPLOY_TIMEOUT_S = 1800.0


class DeployError(RuntimeError):
    """The deployment failed; endpoints that were serving keep serving their old version."""


@dataclass(frozen=True)
class Target:
    """Where a deployment goes, and how its build is made: an app (default: the project's
    name), one of its environments (default: chosen by the platform, as the original
    chooses it), and `flash build`'s options."""

    app: str | None = None
    environment: str | None = None
    exclude: Sequence[str] = ()
    no_deps: bool = False
    output: str | None = None

    def fields(self) -> dict[str, str]:
        return {key: value for key, value in
                (("app", self.app), ("environment", self.environment)) if value}

    def build(self, project_dir: Path, progress: Callable[[str], None]) -> BuildResult:
        from runpod_flash.build import build_project

        return build_project(project_dir, progress, environment=self.environment,
                             exclude=self.exclude, no_deps=self.no_deps, output=self.output)


def project_app(project_dir: Path) -> str:
    """The app a project deploys into by default: flash.toml's project_name, else the
    directory's name (as `flash build` names the project)."""
    from runpod_flash.build.settings import load_settings

    return load_settings(project_dir).project_name or Path(project_dir).resolve().name


def deploy_project(
    project_dir: Path,
    only: list[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
    yes: bool = False,
    target: Target = Target(),
) -> tuple[Platform, list[dict[str, Any]]]:
    """Build `project_dir` and deploy its endpoints into `target`; returns their results.

    Missing system packages are shown and asked for first (`yes` skips the question).
    """
    result = target.build(project_dir, progress)
    approved = _approve_system_packages(result.manifest, only, yes)
    platform = ensure_platform()
    try:
        platform.call("PUT", f"/api/v1/artifacts/{result.artifact_sha256}",
                      raw=result.artifact_path.read_bytes(), timeout=UPLOAD_TIMEOUT_S)
        progress(f"uploaded artifact {result.artifact_sha256[:12]}")
        deployment = platform.call("POST", "/api/v1/deployments", {
            "artifact": result.artifact_sha256, "python": sys.executable, "resources": only,
            APPROVED_KEY: approved, **target.fields(),
        })
    except PlatformError as exc:
        raise DeployError(str(exc)) from None
    return platform, follow_deployment(platform, deployment, progress)


def follow_deployment(
    platform: Platform, deployment: dict[str, Any], progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Poll a deployment the platform started (a deploy, a rollback) until it ends, showing
    its progress; returns its results, or raises DeployError with its reason."""
    shown = 0
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    try:
        while deployment["status"] == "running" and time.monotonic() < deadline:
            for line in deployment["progress"][shown:]:
                progress(line)
            shown = len(deployment["progress"])
            time.sleep(0.1)
            deployment = platform.call("GET", f"/api/v1/deployments/{deployment['id']}")
    except PlatformError as exc:
        raise DeployError(str(exc)) from None
    for line in deployment["progress"][shown:]:
        progress(line)
    if deployment["status"] != "succeeded":
        raise DeployError(deployment.get("error") or f"deployment is {deployment['status']}")
    return deployment["results"]


def preview_project(
    project_dir: Path,
    only: list[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
    target: Target = Target(),
) -> dict[str, Any]:
    """Build `project_dir` and ask the platform what deploying it would change (nothing is
    uploaded, created or started): `{"app", "environment", "changes": [...]}`."""
    result = target.build(project_dir, progress)
    try:
        return ensure_platform().call("POST", "/api/v1/deployments/preview", {
            "artifact": result.artifact_sha256, "python": sys.executable, "resources": only,
            "manifest": result.manifest, **target.fields(),
        })
    except PlatformError as exc:
        raise DeployError(str(exc)) from None


def _approve_system_packages(
    manifest: dict[str, Any], only: list[str] | None, yes: bool
) -> dict[str, list[str]]:
    """Per endpoint, the missing system packages the user agreed to install; asked here
    because the platform, a daemon, cannot ask."""
    approved: dict[str, list[str]] = {}
    for name, resource in sorted(manifest["resources"].items()):
        names = resource.get("system_dependencies") or []
        if not names or (only and name not in only):
            continue
        try:
            approved[name] = approve_system_packages(name, names, yes)
        except (SystemPackagesRefused, ValueError) as exc:
            raise DeployError(str(exc)) from None
    return {name: names for name, names in approved.items() if names}


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
