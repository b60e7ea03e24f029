"""`flash app` and `flash env`: the apps and environments deployments go into.

An app (default: the project's name, from flash.toml's project_name or the directory) has
environments (`dev`, `staging`, `production`), each with its own endpoints, URLs and workers.
Deleting one undeploys its endpoints, after asking (unless `--force`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer
from rich.table import Table

from runpod_flash.cli.output import call_platform, console

APP = typer.Option(None, "--app", "-a",
                   help="The app (default: this project's name: flash.toml or the directory).")
FORCE = typer.Option(False, "--force", "-f", help="Do not ask before undeploying.")
JSON = typer.Option(False, "--json", help="Print machine-readable JSON.")

apps = typer.Typer(help="Apps: a project's deployments, grouped in environments.",
                   no_args_is_help=True)
environments = typer.Typer(help="Environments of an app (dev, staging, production, ...).",
                           no_args_is_help=True)


def _app_or_project(app: str | None) -> str:
    from runpod_flash.deploy import project_app

    return app or project_app(Path.cwd())


def _path(app: str, environment: str | None = None) -> str:
    path = f"/api/v1/apps/{quote(app, safe='')}"
    return path + (f"/environments/{quote(environment, safe='')}" if environment else "")


def _endpoint_rows(table: Table, environment: dict[str, Any], url: str) -> None:
    endpoints = environment["endpoints"]
    if not endpoints:
        table.add_row(environment["name"], "-", "", "", "")
    for endpoint in endpoints:
        ready = sum(1 for w in endpoint["workers"] if w["state"] == "ready")
        table.add_row(environment["name"], endpoint["name"], endpoint["type"],
                      f"{url}{endpoint['path']}", f"{ready}/{len(endpoint['workers'])}")


def _show(environments_: list[dict[str, Any]]) -> None:
    from runpod_flash.control import find_running

    platform = find_running()
    url = platform.url if platform else ""
    table = Table()
    table.add_column("environment", no_wrap=True)
    table.add_column("endpoint", no_wrap=True)
    table.add_column("type")
    table.add_column("url", overflow="fold")
    table.add_column("workers")
    for environment in environments_:
        _endpoint_rows(table, environment, url)
    console.print(table)


def _confirm_undeploy(what: str, endpoints: list[dict[str, Any]], force: bool) -> None:
    if force or not endpoints:
        return
    names = ", ".join(e["name"] for e in endpoints)
    if not typer.confirm(f"Delete {what}? It undeploys {len(endpoints)} endpoint(s): {names}"):
        console.print("nothing deleted")
        raise typer.Exit(1)


# -- flash app ---------------------------------------------------------------------------


@apps.command("list")
def list_apps(as_json: bool = JSON) -> None:
    """Apps, their environments and endpoint counts."""
    answer = call_platform("GET", "/api/v1/apps")
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    if not answer["apps"]:
        console.print("no apps yet; `flash deploy` creates the project's app")
        return
    table = Table()
    table.add_column("app", no_wrap=True)
    table.add_column("environments", overflow="fold")
    table.add_column("endpoints")
    for app in answer["apps"]:
        envs = app["environments"]
        table.add_row(app["name"], ", ".join(e["name"] for e in envs) or "-",
                      str(sum(len(e["endpoints"]) for e in envs)))
    console.print(table)


@apps.command("create")
def create_app(name: str = typer.Argument(..., help="The app's name.")) -> None:
    """Create an app (deploying with --app NAME creates it too)."""
    call_platform("POST", "/api/v1/apps", {"name": name})
    console.print(f"app [bold]{name}[/bold] ready")


@apps.command("get")
def get_app(name: str = typer.Argument(..., help="The app's name."),
            as_json: bool = JSON) -> None:
    """An app's environments and their endpoints."""
    answer = call_platform("GET", _path(name))
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    console.print(f"app [bold]{name}[/bold]")
    _show(answer["environments"])


@apps.command("delete")
def delete_app(name: str = typer.Argument(..., help="The app's name."),
               force: bool = FORCE) -> None:
    """Delete an app: every environment's endpoints are undeployed (asks first)."""
    answer = call_platform("GET", _path(name))
    endpoints = [e for env in answer["environments"] for e in env["endpoints"]]
    _confirm_undeploy(f"app '{name}'", endpoints, force)
    deleted = call_platform("DELETE", _path(name))
    console.print(f"deleted app [bold]{name}[/bold]; undeployed: "
                  f"{', '.join(deleted['undeployed']) or 'nothing'}")


# -- flash env ---------------------------------------------------------------------------


@environments.command("list")
def list_environments(app: str | None = APP, as_json: bool = JSON) -> None:
    """The app's environments and their endpoints."""
    app = _app_or_project(app)
    answer = call_platform("GET", _path(app) + "/environments")
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    if not answer["environments"]:
        console.print(f"app [bold]{app}[/bold] has no environments; `flash deploy --env NAME` "
                      "or `flash env create NAME` makes one")
        return
    console.print(f"app [bold]{app}[/bold]")
    _show(answer["environments"])


@environments.command("create")
def create_environment(name: str = typer.Argument(..., help="The environment's name."),
                       app: str | None = APP) -> None:
    """Create an environment (deploying with --env NAME creates it too)."""
    app = _app_or_project(app)
    call_platform("POST", _path(app) + "/environments", {"name": name})
    console.print(f"environment [bold]{name}[/bold] of app [bold]{app}[/bold] ready; deploy "
                  f"to it with `flash deploy --env {name}`")


@environments.command("get")
def get_environment(name: str = typer.Argument(..., help="The environment's name."),
                    app: str | None = APP, as_json: bool = JSON) -> None:
    """One environment: its endpoints, URLs and workers."""
    app = _app_or_project(app)
    answer = call_platform("GET", _path(app, name))
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    console.print(f"app [bold]{app}[/bold], environment [bold]{name}[/bold]")
    _show([answer])


@environments.command("delete")
def delete_environment(name: str = typer.Argument(..., help="The environment's name."),
                       app: str | None = APP, force: bool = FORCE) -> None:
    """Delete an environment: its endpoints are undeployed (asks first unless --force)."""
    app = _app_or_project(app)
    answer = call_platform("GET", _path(app, name))
    _confirm_undeploy(f"environment '{name}' of app '{app}'", answer["endpoints"], force)
    deleted = call_platform("DELETE", _path(app, name))
    console.print(f"deleted environment [bold]{name}[/bold]; undeployed: "
                  f"{', '.join(deleted['undeployed']) or 'nothing'}")
