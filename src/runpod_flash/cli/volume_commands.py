"""`flash volume list|create|delete`: the platform's network volumes.

Volumes are directories the platform owns; the commands go through its control API (starting
the embedded platform when none runs), so they see the same folder its workers mount.
"""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import quote

import typer
from rich.table import Table

from runpod_flash.cli.output import call_platform, console

app = typer.Typer(help="Network volumes: persistent folders workers see at /runpod-volume.",
                  no_args_is_help=True)


def _size(used: float) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    index = 0
    while used >= 1024 and index < len(units) - 1:
        used, index = used / 1024, index + 1
    return f"{used:.0f} B" if index == 0 else f"{used:.1f} {units[index]}"


@app.command("list")
def list_volumes(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Volumes, where their data lives, space used and the endpoints using them."""
    answer = call_platform("GET", "/api/v1/volumes")
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    if not answer["volumes"]:
        console.print(f"no volumes (they live in {answer['root']}); create one with "
                      "`flash volume create NAME` or name one in networkVolume=")
        return
    table = Table()
    table.add_column("volume", no_wrap=True)
    for title in ("used", "declared", "endpoints", "path", "created"):
        table.add_column(title, overflow="fold")
    for volume in answer["volumes"]:
        created = volume["created_at"]
        table.add_row(
            volume["name"], _size(volume["bytes"]),
            f"{volume['size_gb']} GB" if volume["size_gb"] else "-",
            "\n".join(volume["endpoints"]) or "-", volume["path"],
            datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S") if created else "-",
        )
    console.print(table)


@app.command()
def create(
    name: str = typer.Argument(..., help="Volume name (as in NetworkVolume(name=...))."),
    size: int = typer.Option(None, "--size", min=1, help="Declared size in GB (recorded, "
                             "not enforced)."),
) -> None:
    """Create a volume (an endpoint naming one creates it too)."""
    answer = call_platform("POST", "/api/v1/volumes", {"name": name, "size": size})
    verb = "created" if answer["created"] else "already exists:"
    console.print(f"volume {answer['name']} {verb} {answer['path']}")


@app.command()
def delete(
    name: str = typer.Argument(..., help="Volume name."),
    force: bool = typer.Option(False, "--force", help="Delete even while endpoints use it."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a volume and all its files (undeploy never does this)."""
    if not yes and not typer.confirm(f"Delete volume '{name}' and all its files?"):
        raise typer.Exit(1)
    query = "?force=1" if force else ""
    answer = call_platform("DELETE", f"/api/v1/volumes/{quote(name, safe='')}{query}")
    console.print(f"deleted volume {answer['deleted']} ({answer['path']})")
