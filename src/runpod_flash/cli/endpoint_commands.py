"""`flash status`, `flash undeploy`, `flash logs`: endpoints on the running platform."""

from __future__ import annotations

import contextlib
import json
import time
from difflib import get_close_matches
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


def call(platform: client.Platform, method: str, path: str, body: object = None) -> dict:
    try:
        return platform.call(method, path, body)
    except client.PlatformError as exc:
        fail(str(exc))


def status(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    live: bool = typer.Option(False, "--live", help="Only live endpoints."),
    deployed: bool = typer.Option(False, "--deployed", help="Only deployed endpoints."),
    environment: str = typer.Option(
        None, "--env", "-e", help="Only deployed endpoints of this environment."),
    watch: float = typer.Option(
        None, "--watch", "-w", min=0.5, metavar="SECONDS",
        help="Refresh in place every SECONDS until Ctrl-C."),
) -> None:
    """Endpoints, their type, URL, routes, workers and traffic; deployed and live apart."""
    from runpod_flash.cli.status_view import render

    platform = connect()

    def endpoints() -> list[dict]:
        info = call(platform, "GET", "/api/v1/status")
        # The platform sends env names with `***` values; masking again here keeps a secret
        # off the terminal even from a platform that would send values.
        found = [{**e, "url": platform.url + e["path"], "env": mask_env(e.get("env"))}
                 for e in info["endpoints"]]
        return [e for e in found
                if (not live or e["kind"] == "live")
                and (not (deployed or environment) or e["kind"] == "deployed")
                and (not environment or e.get("environment") == environment)]

    if as_json:
        typer.echo(json.dumps({"platform": platform.url, "endpoints": endpoints()}, indent=2))
        return
    if watch is None:
        console.print(render(platform.url, endpoints()))
        return
    from rich.live import Live

    with contextlib.suppress(KeyboardInterrupt), Live(
        render(platform.url, endpoints()), console=console, auto_refresh=False,
        screen=False,
    ) as view:
        while True:
            time.sleep(watch)
            view.update(render(platform.url, endpoints()), refresh=True)


def deployed_endpoints(platform: client.Platform, environment: str | None) -> list[dict]:
    """The deployed endpoints (of `environment` when given), with their URLs."""
    return [
        {**e, "url": platform.url + e["path"]}
        for e in call(platform, "GET", "/api/v1/status")["endpoints"]
        if e["kind"] == "deployed" and environment in (None, e.get("environment"))
    ]


def _label(endpoint: dict) -> str:
    where = endpoint.get("environment")
    return f"{endpoint['name']} ({where})" if where else endpoint["name"]


def _print_deployed(endpoints: list[dict], numbered: bool = False) -> None:
    """`flash undeploy list`, and the choices of `--interactive`."""
    if not endpoints:
        console.print("no deployed endpoints")
        return
    table = Table()
    if numbered:
        table.add_column("#", justify="right")
    table.add_column("endpoint", no_wrap=True)
    with_environment = any("environment" in e for e in endpoints)
    if with_environment:
        table.add_column("environment")
    for title in ("status", "URL", "workers"):
        table.add_column(title, overflow="fold")
    for number, endpoint in enumerate(endpoints, 1):
        states = [w["state"] for w in endpoint["workers"]]
        status_text = ("[green]active[/green]" if endpoint["status"] == "ready" else
                       f"[red]inactive[/red] ({endpoint['error'] or endpoint['status']})")
        row = [str(number)] if numbered else []
        row.append(endpoint["name"])
        if with_environment:
            row.append(endpoint.get("environment") or "")
        starting = states.count("starting")
        row += [status_text, endpoint["url"], f"{states.count('ready')} ready"
                + (f", {starting} starting" if starting else "")]
        table.add_row(*row)
    console.print(table)


def named_endpoints(endpoints: list[dict], name: str, environment: str | None) -> list[dict]:
    """The deployed endpoints NAME means (its name or id); one environment's, or an error."""
    matches = [e for e in endpoints if client.slug(name) in (client.slug(e["name"]), e["id"])]
    if not matches:
        close = get_close_matches(name, sorted({e["name"] for e in endpoints}), n=1)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        where = f" in environment '{environment}'" if environment else ""
        fail(f"no deployed endpoint named '{name}'{where}. {hint}Deployed: "
             f"{', '.join(map(_label, endpoints)) or 'none'}")
    environments = sorted({e.get("environment") or "" for e in matches})
    if len(environments) > 1:
        fail(f"'{name}' is deployed in environments {', '.join(environments)}; choose one with "
             "--env/-e NAME")
    return matches


def _pick(endpoints: list[dict]) -> list[dict]:
    """`--interactive`: endpoints chosen by their numbers in the printed list."""
    _print_deployed(endpoints, numbered=True)
    answer = typer.prompt("Endpoints to undeploy (numbers, e.g. 1,3)", default="",
                          show_default=False)
    try:
        numbers = {int(part) for part in answer.replace(",", " ").split()}
    except ValueError:
        fail(f"{answer!r} is not a list of numbers; give numbers from the list, e.g. 1,3")
    wrong = sorted(n for n in numbers if not 1 <= n <= len(endpoints))
    if wrong:
        fail(f"no endpoint numbered {', '.join(map(str, wrong))}; the list has "
             f"1-{len(endpoints)}")
    return [endpoints[n - 1] for n in sorted(numbers)]


def undeploy(
    name: str = typer.Argument(
        None, help="Endpoint name, or `list` to show the deployed endpoints."),
    all_endpoints: bool = typer.Option(False, "--all", help="Undeploy every deployed endpoint."),
    interactive: bool = typer.Option(
        False, "--interactive", "-i", help="Choose the endpoints from a numbered list."),
    force: bool = typer.Option(
        False, "--force", "-f", "--yes", "-y", help="Do not ask for confirmation."),
    environment: str = typer.Option(
        None, "--env", "-e", help="Only endpoints of this environment."),
    live: bool = typer.Option(
        False, "--live", help="Remove every live endpoint (those scripts and `flash run` made)."),
) -> None:
    """Stop endpoints' workers (in-flight requests finish) and remove their routes; `flash
    undeploy list` shows the deployed endpoints."""
    if (bool(name) + all_endpoints + interactive + live) != 1:
        fail("give an endpoint name, --all, --interactive or --live (one of them); "
             "`flash undeploy list` shows the deployed endpoints")
    platform = connect()
    if live:
        deleted = call(platform, "DELETE", "/api/v1/endpoints/live")["deleted"]
        console.print(f"removed {len(deleted)} live endpoint(s)"
                      + (f": {', '.join(deleted)}" if deleted else ""))
        return
    endpoints = deployed_endpoints(platform, environment)
    if name == "list" or (not name and not endpoints):
        _print_deployed(endpoints)
        return
    if name:
        chosen = named_endpoints(endpoints, name, environment)
    else:
        chosen = _pick(endpoints) if interactive else endpoints
        if not chosen:
            console.print("nothing chosen; nothing undeployed")
            return
        if not force and not typer.confirm(f"Undeploy {', '.join(map(_label, chosen))}?"):
            raise typer.Exit(1)
    for endpoint in chosen:
        call(platform, "DELETE", f"/api/v1/endpoints/{endpoint['id']}")
        console.print(f"undeployed {_label(endpoint)}")


def logs(
    name: str = typer.Argument(..., help="Endpoint name (or id of a live endpoint)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(200, "--tail", help="Lines to show first."),
    worker: str = typer.Option(
        None, "--worker", "-w", help="Only this worker's log (ids as in `flash status --json`)."),
) -> None:
    """Worker output of an endpoint (of all its workers, or of one)."""
    from runpod_flash.control import deployed_endpoint_id

    platform = connect()
    endpoint_id = name if name.startswith("live-") else deployed_endpoint_id(name)
    path = f"/api/v1/endpoints/{endpoint_id}/logs?"
    if worker:
        path += f"worker={quote(worker)}&"
    answer = call(platform, "GET", f"{path}tail={tail}")
    while True:
        for line in answer["lines"]:
            typer.echo(line)
        if not follow:
            return
        time.sleep(0.5)
        answer = call(platform, "GET", f"{path}cursor={quote(json.dumps(answer['cursor']))}")
