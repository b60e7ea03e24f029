"""`flash build` and `flash deploy`: the project in the current (or given) directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import typer

from runpod_flash.cli.output import call_platform, console, fail, progress

if TYPE_CHECKING:
    from runpod_flash.deploy import Target

PROJECT = typer.Argument(Path("."), help="Project directory (default: current directory).")
# The build options, shared by `flash build` and `flash deploy` (which builds first).
EXCLUDE = typer.Option(
    None, "--exclude", metavar="PKG,...",
    help="Leave these packages (exact names, comma-separated) out of the workers' "
         "environments: they use the installed ones.",
)
NO_DEPS = typer.Option(
    False, "--no-deps",
    help="Build no worker environment: workers run with the packages installed here.",
)
OUTPUT = typer.Option(
    None, "--output", "-o", metavar="NAME",
    help="Artifact file name in .flash/ (default: artifact.tar.gz).",
)
ONLY = typer.Option(None, "--endpoint", help="Deploy only this endpoint (repeatable).")
DEPLOY_ARGUMENTS = typer.Argument(
    None, metavar="[PROJECT_DIR] | new ENV | send ENV",
    help="Project directory (default: current directory); `new ENV` creates an environment, "
         "`send ENV` deploys to it.",
)


def package_names(exclude: str | None) -> list[str]:
    """`--exclude a,b` as names; blanks (`a,,b`, a trailing comma) are no names."""
    return [name.strip() for name in (exclude or "").split(",") if name.strip()]


def build(
    project_dir: Path = PROJECT,
    exclude: str | None = EXCLUDE,
    no_deps: bool = NO_DEPS,
    output: str | None = OUTPUT,
) -> None:
    """Scan the project, validate routes, write .flash/flash_manifest.json and the artifact."""
    from runpod_flash.build import BuildError, build_project

    try:
        result = build_project(project_dir.resolve(), progress, exclude=package_names(exclude),
                               no_deps=no_deps, output=output)
    except BuildError as exc:
        fail(str(exc))
    routes = sum(len(r) for r in result.manifest.get("routes", {}).values())
    console.print(
        f"built [bold]{result.manifest['project_name']}[/bold]: "
        f"{len(result.manifest['resources'])} endpoints, {routes} routes, {result.files} files, "
        f"{result.size_bytes / 1024:.0f} KiB\n  manifest {result.manifest_path}\n"
        f"  artifact {result.artifact_path}"
    )


def _deploy_arguments(args: list[str]) -> tuple[Path, str | None, str | None]:
    """(project dir, form, environment) from `[PROJECT]`, `new NAME` or `send NAME`."""
    if len(args) == 2 and args[0] in ("new", "send"):
        return Path("."), args[0], args[1]
    if len(args) > 1:
        fail(f"unexpected arguments {' '.join(args[1:])!r}: use `flash deploy [PROJECT_DIR]`, "
             "`flash deploy new ENV` or `flash deploy send ENV`")
    return Path(args[0] if args else "."), None, None


def deploy(
    args: list[str] = DEPLOY_ARGUMENTS,
    environment: str | None = typer.Option(
        None, "--env", "-e", help="Environment to deploy to (created on first use)."),
    app: str | None = typer.Option(
        None, "--app", "-a", help="App to deploy to (default: the project's name)."),
    endpoint: list[str] = ONLY,
    exclude: str | None = EXCLUDE,
    no_deps: bool = NO_DEPS,
    output: str | None = OUTPUT,
    preview: bool = typer.Option(
        False, "--preview", help="Build and show what would change; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    yes: bool = typer.Option(
        False, "--yes", "-y",
        help="Let apt-get install missing system_dependencies without asking.",
    ),
) -> None:
    """Build, upload and roll out the project's endpoints into an app's environment
    (idempotent)."""
    from runpod_flash.build import BuildError
    from runpod_flash.deploy import DeployError, Target, deploy_project, preview_project

    project_dir, form, named = _deploy_arguments(args or [])
    project_dir = project_dir.resolve()
    if named is not None:
        if environment is not None and environment != named:
            fail(f"`flash deploy {form} {named}` names the environment; drop --env {environment}")
        environment = named
    target = Target(app, environment, package_names(exclude), no_deps, output)
    if form == "new":
        _create_environment(project_dir, target)
        return
    try:
        if preview:
            _show_preview(preview_project(project_dir, endpoint or None, progress, target),
                          as_json)
            return
        platform, results = deploy_project(project_dir, endpoint or None, progress, yes=yes,
                                           target=target)
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


def _create_environment(project_dir: Path, target: Target) -> None:
    """`flash deploy new ENV`: the older form of `flash env create ENV`."""
    from runpod_flash.deploy import project_app

    app = target.app or project_app(project_dir)
    call_platform("POST", f"/api/v1/apps/{quote(app, safe='')}/environments",
                  {"name": target.environment})
    console.print(f"environment [bold]{target.environment}[/bold] of app [bold]{app}[/bold] "
                  f"ready; deploy to it with `flash deploy send {target.environment}`")


def _show_preview(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    console.print(f"preview of a deploy to app [bold]{answer['app']}[/bold], environment "
                  f"[bold]{answer['environment']}[/bold] (nothing was changed):")
    for change in answer["changes"]:
        detail = f" ({', '.join(change['changed'])})" if change["changed"] else ""
        console.print(f"  {change['action']:<9} [bold]{change['name']}[/bold] "
                      f"{change['path']}{detail}")
