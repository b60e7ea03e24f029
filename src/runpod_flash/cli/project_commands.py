"""`flash build` and `flash deploy`: the project in the current (or given) directory."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from runpod_flash.cli.output import console, fail, progress

PROJECT = typer.Argument(Path("."), help="Project directory (default: current directory).")
ONLY = typer.Option(None, "--endpoint", "-e", help="Deploy only this endpoint (repeatable).")


def build(project_dir: Path = PROJECT) -> None:
    """Scan the project, validate routes, write .flash/flash_manifest.json and the artifact."""
    from runpod_flash.build import BuildError, build_project

    try:
        result = build_project(project_dir.resolve(), progress)
    except BuildError as exc:
        fail(str(exc))
    routes = sum(len(r) for r in result.manifest.get("routes", {}).values())
    console.print(
        f"built [bold]{result.manifest['project_name']}[/bold]: "
        f"{len(result.manifest['resources'])} endpoints, {routes} routes, {result.files} files, "
        f"{result.size_bytes / 1024:.0f} KiB\n  manifest {result.manifest_path}\n"
        f"  artifact {result.artifact_path}"
    )


def deploy(
    project_dir: Path = PROJECT,
    endpoint: list[str] = ONLY,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    yes: bool = typer.Option(
        False, "--yes", "-y",
        help="Let apt-get install missing system_dependencies without asking.",
    ),
) -> None:
    """Build, upload and roll out the project's endpoints (idempotent)."""
    from runpod_flash.build import BuildError
    from runpod_flash.deploy import DeployError, deploy_project

    try:
        platform, results = deploy_project(
            project_dir.resolve(), endpoint or None, progress, yes=yes
        )
    except (BuildError, DeployError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps([{**r, "url": platform.url + r["path"]} for r in results]))
        return
    for result in results:
        console.print(
            f"[bold]{result['name']}[/bold] {result['action']}: {platform.url}{result['path']}"
        )
        for route in result["routes"]:
            console.print(f"    {route}")
