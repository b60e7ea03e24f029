"""`flash build`: scan the project, check it, read its resource configs, write the artifact.

Nothing in the project runs in this process; modules are imported once, in a child process
with FLASH_BUILD=1, only to read the live resource objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runpod_flash.dependencies import requirement_name
from runpod_flash.envfile import EnvFileError, load_project_env

from .artifact import MANIFEST_NAME, write_artifact
from .errors import BuildError
from .guarded_import import LiveFunction, import_project
from .ignore import collect_files
from .manifest import (
    ResourceGroup,
    add_handlers,
    build_manifest,
    group_by_resource,
    manifest_json,
    read_requirements,
    write_manifest,
)
from .resolve import ConfigResolver
from .scanner import FunctionDecl, ModuleScan, scan_project
from .settings import apply_overrides, load_settings
from .validate import Route, check_routes, check_unique_names, routing_warnings

__all__ = ["BuildError", "BuildResult", "build_project"]

OUTPUT_DIR = ".flash"
ARTIFACT_NAME = "artifact.tar.gz"


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: the manifest (also on disk) and the artifact's identity."""

    manifest: dict[str, Any]
    manifest_path: Path
    artifact_path: Path
    artifact_sha256: str
    files: int
    size_bytes: int


def static_routes(scans: dict[str, ModuleScan], functions: list[FunctionDecl]) -> list[Route]:
    """Routes as the source spells them, for functions whose config the source reveals."""
    resolver = ConfigResolver(scans)
    routes = []
    for fn in functions:
        config = resolver.resolve(fn)
        if config is not None and fn.route_is_literal:
            routes.append(Route(fn, config.name, config.load_balanced, fn.method, fn.path))
    return routes


def _live_functions(
    functions: list[FunctionDecl], live: dict[FunctionDecl, LiveFunction | None]
) -> dict[FunctionDecl, LiveFunction]:
    """The live configs, once every decorated function was found after import."""
    for fn in functions:
        if live[fn] is None:
            raise BuildError(
                f"{fn.file}:{fn.line}: after import, module '{fn.module}' has no @remote "
                f"function named '{fn.name}'; define it at module level and do not rebind "
                "the name"
            )
    return {fn: value for fn, value in live.items() if value is not None}


def _load_env(project_dir: Path, progress: Callable[[str], None]) -> None:
    """Load the project's `.env` first, so resource configs read its values on import."""
    try:
        loaded = load_project_env(project_dir)
    except EnvFileError as exc:
        raise BuildError(str(exc)) from None
    if loaded:  # names only: the values may be secrets
        progress(f"Loaded {', '.join(loaded)} from .env")


def _trim_dependencies(
    manifest: dict[str, Any], exclude: Sequence[str], no_deps: bool,
    progress: Callable[[str], None],
) -> None:
    """`--exclude` and `--no-deps`: what the workers' environments are built from.

    The platform builds those environments from the manifest, on top of the Python that
    deploys; what is left out here is used from that Python's packages (the original assumes
    excluded packages are in its base image, and `--no-deps` skips installing any)."""
    wanted = {requirement_name(name): name for name in exclude}
    resources = list(manifest["resources"].values())
    matched: set[str] = set()
    for resource in resources:
        kept = []
        for requirement in resource["dependencies"]:
            name = requirement_name(requirement)
            if name in wanted:
                matched.add(name)
            else:
                kept.append(requirement)
        resource["dependencies"] = kept
    if matched:
        progress(f"Excluded {', '.join(sorted(matched))}: workers use the installed ones")
    unmatched = [name for key, name in wanted.items() if key not in matched]
    if unmatched:
        progress(f"warning: No packages matched exclusions: {', '.join(unmatched)}")
    if no_deps:
        skipped = sorted({d for resource in resources for d in resource["dependencies"]})
        for resource in resources:
            resource["dependencies"] = []
        if skipped:
            progress(f"--no-deps: no environment is built for {', '.join(skipped)}; workers "
                     "run with the packages installed where `flash deploy` runs")


def _check_output_name(output: str) -> None:
    if output in ("", ".", "..", MANIFEST_NAME) or Path(output).name != output:
        raise BuildError(
            f"--output {output!r} must be a plain file name (the artifact is written in "
            f"{OUTPUT_DIR}/), e.g. -o app.tar.gz"
        )


def build_project(
    project_dir: Path, progress: Callable[[str], None] = lambda _: None, *,
    environment: str | None = None,
    exclude: Sequence[str] = (),
    no_deps: bool = False,
    output: str | None = None,
) -> BuildResult:
    """Build `project_dir` into `.flash/flash_manifest.json` and `.flash/<output>` (default
    artifact.tar.gz);
    `environment` picks its `[environments.<env>]` overrides from flash.toml; `exclude` and
    `no_deps` leave requirements out of the workers' environments."""
    project_dir = Path(project_dir).resolve()
    if not project_dir.is_dir():
        raise BuildError(f"{project_dir} is not a directory")
    output = output or ARTIFACT_NAME
    _check_output_name(output)
    _load_env(project_dir, progress)
    files = collect_files(project_dir)
    py_files = [f for f in files if f.endswith(".py")]
    if not py_files:
        raise BuildError(
            f"No Python files found in {project_dir}: not a Flash project. "
            "Run `flash init` to create one"
        )
    progress(f"Scanning {len(py_files)} Python files")
    scans = scan_project(project_dir, py_files)
    functions = [fn for scan in scans.values() for fn in scan.functions]
    settings = load_settings(project_dir)
    if not functions and not settings.handlers:
        raise BuildError(
            f"No @remote functions found in {project_dir}; decorate at least one module-level "
            "function with @remote(resource_config, ...) or declare a [handlers.<name>] "
            "worker in flash.toml"
        )
    groups: dict[str, ResourceGroup] = {}
    if functions:
        check_unique_names(functions)
        static = static_routes(scans, functions)
        check_routes(static)
        for warning in routing_warnings(static):
            progress(f"warning: {warning}")
        progress(f"Importing {len({fn.module for fn in functions})} modules to read "
                 "resource configs")
        live = _live_functions(functions, import_project(project_dir, functions, set(py_files)))
        check_routes(
            Route(fn, lf.resource.name, lf.resource.is_load_balanced, lf.method, lf.path)
            for fn, lf in live.items()
        )
        groups = group_by_resource(functions, live)
    specs = {name: dict(group.resource.spec) for name, group in groups.items()}
    apply_overrides(specs, settings, environment)
    requirements = read_requirements(project_dir, lambda warning: progress(f"warning: {warning}"))
    manifest = build_manifest(settings.project_name or project_dir.name, groups, specs,
                              requirements)
    add_handlers(manifest, settings.handlers, set(files), requirements)
    _trim_dependencies(manifest, exclude, no_deps, progress)
    output_dir = project_dir / OUTPUT_DIR
    packaged = [f for f in files if f != MANIFEST_NAME]
    progress(f"Packaging {len(packaged)} files")
    reproducible = {key: value for key, value in manifest.items() if key != "generated_at"}
    artifact_path = output_dir / output
    sha256, size = write_artifact(
        project_dir, packaged, manifest_json(reproducible), artifact_path
    )
    # Written last, so a failed build never leaves a manifest that disagrees with the artifact.
    manifest_path = output_dir / MANIFEST_NAME
    write_manifest(manifest_path, manifest)
    progress(f"Built {manifest['project_name']}: {len(functions)} functions on "
             f"{len(manifest['resources'])} endpoints, {size / 1024:.1f} KiB")
    return BuildResult(manifest, manifest_path, artifact_path, sha256, len(packaged), size)
