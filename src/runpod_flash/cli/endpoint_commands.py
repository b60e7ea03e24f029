"""`flash status`, `flash undeploy`, `flash logs`: endpoints on the running platform."""

from __future__ import annotations

import json
import time
from datetime import datetime
from urllib.parse import quote

import typer
from rich.table import Table

from runpod_flash import control as client
from runpod_flash.cli.output import console, fail
from runpod_flash.envfile import mask_env


def connect() -> client.Platform:
    platform = client.find_running()
    if platform is None:
        fail("no platform is running; start one with `flash platform start` or `flash deploy`")
    return platform


def call(platform: client.Platform, method: str, path: str) -> dict:
    try:
        return platform.call(method, path)
    except client.PlatformError as exc:
        fail(str(exc))


def status(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Endpoints, their type, URL, routes, workers and last deploy."""
    platform = connect()
    info = call(platform, "GET", "/api/v1/status")
    # The platform sends env names with `***` values; masking again here keeps a secret off
    # the terminal even from a platform that would send values.
    endpoints = [{**e, "url": platform.url + e["path"], "env": mask_env(e.get("env"))}
                 for e in info["endpoints"]]
    if as_json:
        typer.echo(json.dumps({"platform": platform.url, "endpoints": endpoints}, indent=2))
        return
    table = Table()
    table.add_column("endpoint", no_wrap=True)
    for title in ("type", "status", "workers", "traffic", "URL", "routes", "env", "deployed"):
        table.add_column(title, overflow="fold")
    for endpoint in endpoints:
        states = [w["state"] for w in endpoint["workers"]]
        status_text = endpoint["status"]
        if endpoint["error"]:
            status_text += f": {endpoint['error']}"
        elif endpoint["last_start_failure"]:
            status_text += f" (workers failing: {endpoint['last_start_failure']})"
        table.add_row(
            endpoint["name"], f"{endpoint['kind']} {endpoint['type']}", status_text,
            f"{states.count('ready')} ready / {states.count('starting')} starting",
            _traffic(endpoint["stats"]), endpoint["url"], "\n".join(endpoint["routes"]),
            "\n".join(f"{name}={value}" for name, value in endpoint["env"].items()),
            datetime.fromtimestamp(endpoint["deployed_at"]).strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(f"platform {platform.url}")
    console.print(table)


def _traffic(stats: dict[str, int]) -> str:
    """Requests, errors, cold starts, and the queue for queue endpoints."""
    text = (f"{stats['requests']} req, {stats['errors']} err, {stats['cold_starts']} cold "
            f"starts")
    if "queued" in stats:
        text += f", {stats['queued']} queued, {stats['running']} running"
    return text


def undeploy(
    name: str = typer.Argument(None, help="Endpoint name."),
    all_endpoints: bool = typer.Option(False, "--all", help="Undeploy every deployed endpoint."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --all."),
) -> None:
    """Stop an endpoint's workers (in-flight requests finish) and remove its routes."""
    from runpod_flash.control import deployed_endpoint_id

    if bool(name) == all_endpoints:
        fail("give an endpoint name or --all (not both)")
    platform = connect()
    if all_endpoints:
        names = [e["id"] for e in call(platform, "GET", "/api/v1/status")["endpoints"]
                 if e["kind"] == "deployed"]
        if not names:
            console.print("no deployed endpoints")
            return
        if not yes and not typer.confirm(f"Undeploy {', '.join(names)}?"):
            raise typer.Exit(1)
    else:
        names = [deployed_endpoint_id(name)]
    for endpoint_id in names:
        call(platform, "DELETE", f"/api/v1/endpoints/{endpoint_id}")
        console.print(f"undeployed {endpoint_id}")


def logs(
    name: str = typer.Argument(..., help="Endpoint name (or id of a live endpoint)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(200, "--tail", help="Lines to show first."),
) -> None:
    """Worker output of an endpoint."""
    from runpod_flash.control import deployed_endpoint_id

    platform = connect()
    endpoint_id = name if name.startswith("live-") else deployed_endpoint_id(name)
    answer = call(platform, "GET", f"/api/v1/endpoints/{endpoint_id}/logs?tail={tail}")
    while True:
        for line in answer["lines"]:
            typer.echo(line)
        if not follow:
            return
        time.sleep(0.5)
        cursor = quote(json.dumps(answer["cursor"]))
        answer = call(platform, "GET", f"/api/v1/endpoints/{endpoint_id}/logs?cursor={cursor}")
