"""`flash run`: the local development server (see runpod_flash.devserver)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from runpod_flash.cli.output import fail, progress

DEFAULT_HOST = "127.0.0.1"  # this machine only: routes run code on your workers
DEFAULT_PORT = 8888


def _from_env_file(ctx: typer.Context, name: str, variable: str, value: str) -> str:
    """An option left at its default takes the value the project's `.env` set."""
    source = ctx.get_parameter_source(name)  # typer's own click: compare by name
    if source is not None and source.name == "DEFAULT":
        return os.environ.get(variable) or value
    return value


def run(
    ctx: typer.Context,
    host: str = typer.Option(DEFAULT_HOST, "--host", envvar="FLASH_HOST",
                             help="Interface to listen on; 0.0.0.0 exposes it to your network."),
    port: int = typer.Option(DEFAULT_PORT, "--port", "-p", envvar="FLASH_PORT", min=0,
                             max=65535, help="Port to listen on (0: any free port)."),
    reload: bool = typer.Option(True, "--reload/--no-reload",
                                help="Reload when a project file changes."),
    auto_provision: bool = typer.Option(False, "--auto-provision",
                                        help="Start every endpoint's first worker before "
                                             "serving, so the first requests are warm."),
) -> None:
    """Serve the project's @remote functions on a local dev server, with hot reload."""
    from runpod_flash.envfile import EnvFileError, load_project_env

    project_dir = Path.cwd()
    try:
        loaded = load_project_env(project_dir)
    except EnvFileError as exc:
        fail(str(exc))
    if loaded:  # names only: the values may be secrets
        progress(f"Loaded {', '.join(loaded)} from .env")
    host = _from_env_file(ctx, "host", "FLASH_HOST", host)
    raw_port = _from_env_file(ctx, "port", "FLASH_PORT", str(port))
    if not raw_port.isdigit() or int(raw_port) > 65535:
        fail(f"FLASH_PORT={raw_port!r} in .env is not a port number; set it to 0-65535")

    from runpod_flash.devserver.session import Options, run_session

    options = Options(project_dir, host, int(raw_port), reload, auto_provision)
    raise typer.Exit(run_session(options))
