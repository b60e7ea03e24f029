"""`flash rollback`: a deployed endpoint back on a version it ran before, rolled out like a
deploy (the running version serves until the kept one is healthy); `--list` shows the kept
versions."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import typer
from rich.table import Table

from runpod_flash.cli.endpoint_commands import call, connect, deployed_endpoints, named_endpoints
from runpod_flash.cli.output import console, fail, progress


def rollback(
    name: str = typer.Argument(..., metavar="ENDPOINT", help="Endpoint name, or its id."),
    version: str = typer.Argument(
        None, metavar="[VERSION]",
        help="A kept version: its number in --list, or 4 or more characters of it "
             "(default: the version before the current one)."),
    environment: str = typer.Option(
        None, "--env", "-e", help="The endpoint's environment (when the name is in several)."),
    show: bool = typer.Option(False, "--list", help="Show the kept versions; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Redeploy a kept version of an endpoint with the usual zero-downtime rollout."""
    from runpod_flash.deploy import DeployError, follow_deployment

    platform = connect()
    endpoint = named_endpoints(deployed_endpoints(platform, environment), name, environment)[0]
    base = f"/api/v1/endpoints/{quote(endpoint['id'], safe='')}"
    if show:
        if version is not None:
            fail("--list shows every kept version; drop VERSION, or drop --list to roll back")
        answer = call(platform, "GET", f"{base}/versions")
        if as_json:
            typer.echo(json.dumps(answer, indent=2))
        else:
            console.print(_versions_table(answer))
        return
    deployment = call(platform, "POST", f"{base}/rollback", {"version": version})
    try:
        result = follow_deployment(platform, deployment, progress)[0]
    except DeployError as exc:
        fail(f"{exc}; the running version keeps serving")
    if as_json:
        typer.echo(json.dumps({**result, "url": platform.url + result["path"]}))
        return
    done = "already runs" if result["action"] == "unchanged" else "rolled back to"
    console.print(f"[bold]{result['name']}[/bold] {done} version {result['version']}: "
                  f"{platform.url}{result['path']}")


def _versions_table(answer: dict[str, Any]) -> Table:
    """Kept versions, newest first, numbered as `flash rollback NAME NUMBER` takes them."""
    table = Table(title=f"{answer['name']}: kept versions, newest first "
                        f"(the platform keeps {answer['keep']})")
    table.add_column("#", justify="right")
    for title in ("version", "deployed", "how", "artifact", ""):
        table.add_column(title, no_wrap=True)
    for kept in answer["versions"]:
        table.add_row(
            str(kept["index"]), kept["version"],
            time.strftime("%Y-%m-%d %H:%M", time.localtime(kept["deployed_at"])), kept["how"],
            (kept["artifact"] or "")[:12], "[green]current[/green]" if kept["current"] else "")
    return table
