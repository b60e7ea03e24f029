"""`flash`: the command line entry point."""

from __future__ import annotations

import typer

from runpod_flash import __version__
from runpod_flash.cli import (
    dev_commands,
    endpoint_commands,
    platform_commands,
    project_commands,
    volume_commands,
)
from runpod_flash.cli.init_command import init

app = typer.Typer(
    help="openflash: serve @remote functions as serverless endpoints on your own machine.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(platform_commands.app, name="platform")
app.add_typer(volume_commands.app, name="volume")
app.command()(init)
app.command()(dev_commands.run)
app.command()(project_commands.build)
app.command()(project_commands.deploy)
app.command()(endpoint_commands.status)
app.command()(endpoint_commands.undeploy)
app.command()(endpoint_commands.logs)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"openflash {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", "-v", callback=_show_version, is_eager=True,
        help="Show the version and exit.",
    ),
) -> None:
    """openflash command line."""
