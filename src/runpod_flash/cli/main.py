"""`flash`: the command line entry point."""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from runpod_flash import __version__
from runpod_flash.cli import (
    app_commands,
    dashboard_command,
    dev_commands,
    endpoint_commands,
    login_command,
    platform_commands,
    project_commands,
    rollback_command,
    volume_commands,
)
from runpod_flash.cli.init_command import init
from runpod_flash.cli.output import fail
from runpod_flash.config import UnsafeHome
from runpod_flash.control import PlatformError


class FlashGroup(TyperGroup):
    """The top-level group: a platform that refuses or does not answer is a one-line error in
    every command, as when a platform saved by `flash login` is down (never a traceback).

    Typos are typer's: `flash stauts` says `No such command 'stauts'. Did you mean 'status'?`
    in every group, and click suggests options the same way."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (PlatformError, UnsafeHome) as exc:
            fail(str(exc))


app = typer.Typer(
    cls=FlashGroup,
    help="openflash: serve @remote functions as serverless endpoints on your own machine.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(platform_commands.app, name="platform")
app.add_typer(volume_commands.app, name="volume")
app.add_typer(app_commands.apps, name="app")
app.add_typer(app_commands.environments, name="env")
app.command()(init)
app.command()(dev_commands.run)
app.command()(project_commands.build)
app.command()(project_commands.deploy)
app.command()(endpoint_commands.status)
app.command()(endpoint_commands.undeploy)
app.command()(rollback_command.rollback)
app.command()(endpoint_commands.logs)
app.command()(login_command.login)
app.command()(login_command.logout)
app.command()(dashboard_command.dashboard)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"flash, version {__version__} (openflash {__version__})")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", "-v", callback=_show_version, is_eager=True,
        help="Show the version and exit.",
    ),
) -> None:
    """openflash command line."""
