"""`flash platform start|status|stop`: the embedded platform's life cycle."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from runpod_flash import control as client
from runpod_flash.config import UnsafeHome

app = typer.Typer(help="Start, inspect and stop the embedded platform.", no_args_is_help=True)
console = Console()

STOP_TIMEOUT_S = 30.0


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


@app.command()
def start(
    foreground: bool = typer.Option(
        False, "--foreground", help="Run in this terminal instead of in the background."
    ),
    api_key: str = typer.Option(
        None, "--api-key", envvar="FLASH_API_KEY",
        help="Require 'Authorization: Bearer <key>' on deployed endpoints.",
    ),
    provider: str = typer.Option(
        "local", "--provider", envvar="FLASH_PROVIDER",
        help="Where workers run: local (this machine) or ray (a Ray cluster's nodes).",
    ),
    ray_address: str = typer.Option(
        "auto", "--ray-address", envvar="FLASH_RAY_ADDRESS",
        help="The Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT.",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", envvar="FLASH_PLATFORM_HOST",
        help="The address to listen on; another machine's workers (a Ray cluster) call it.",
    ),
) -> None:
    """Start the platform (bound to 127.0.0.1) unless one is already running."""
    if provider not in ("local", "ray"):
        _fail(f"--provider {provider!r}: use local or ray")
    if api_key:
        os.environ["FLASH_API_KEY"] = api_key
    os.environ["FLASH_PROVIDER"], os.environ["FLASH_RAY_ADDRESS"] = provider, ray_address
    os.environ["FLASH_PLATFORM_HOST"] = host
    if foreground:
        # The platform's own entry point, in place of this process: same terminal, same
        # pid, and the CLI stays a client of the platform (it never imports it).
        os.execv(sys.executable, [sys.executable, "-m", "runpod_flash.platform"])
    try:
        already = client.find_running()
        if already is not None and api_key and not _started_with_key(already, api_key):
            _fail(
                f"a platform is already running at {already.url}, and an API key takes effect "
                "only when a platform starts; this one does not require that key. Run `flash "
                "platform stop`, then `flash platform start --api-key ...` again"
            )
        if already is not None:
            running = already.call("GET", "/api/v1/status").get("provider", {})
            if running.get("provider", "local") != provider:
                _fail(f"a platform with the {running.get('provider', 'local')} provider is "
                      f"already running at {already.url}; run `flash platform stop` first")
        platform = already or client.ensure_platform()
    except (client.PlatformError, ConnectionError, UnsafeHome) as exc:
        _fail(str(exc))
    state = "already running" if already else "started"
    console.print(f"platform {state} at [bold]{platform.url}[/bold]")


def _started_with_key(platform: client.Platform, api_key: str) -> bool:
    """Whether the platform running on this machine requires `api_key`: it reads
    FLASH_API_KEY once, when it starts, from the environment it was started with."""
    if client.saved_login() is not None:
        return False  # another machine's platform: nothing here can tell
    try:
        pid = platform.call("GET", "/api/v1/status")["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (client.PlatformError, OSError, KeyError):
        return False
    return f"FLASH_API_KEY={api_key}".encode() in environ


def _connect() -> client.Platform:
    platform = client.find_running()
    if platform is None:
        _fail("no platform is running; start one with `flash platform start`")
    return platform


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show the platform, its endpoints and their workers."""
    platform = _connect()
    try:
        info = platform.call("GET", "/api/v1/status")
    except client.PlatformError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"url": platform.url, **info}, indent=2))
        return
    console.print(
        f"platform [bold]{platform.url}[/bold]  pid {info['pid']}  up {info['uptime_s']}s  "
        f"GPUs: {', '.join(info['gpus']) or 'none'}"
    )
    table = Table("endpoint", "name", "type", "status", "workers", "URL")
    for endpoint in info["endpoints"]:
        states = [w["state"] for w in endpoint["workers"]]
        workers = f"{states.count('ready')} ready, {states.count('starting')} starting"
        table.add_row(
            endpoint["id"], endpoint["name"], f"{endpoint['kind']} {endpoint['type']}",
            endpoint["status"] if not endpoint["error"] else f"failed: {endpoint['error']}",
            workers, platform.url + endpoint["path"],
        )
    console.print(table)


@app.command()
def stop() -> None:
    """Stop the platform and every worker it started."""
    login = client.saved_login()
    if login is not None:
        _fail(f"you are logged in to the platform at {login.url}, which runs on another "
              "machine: stop it there, or `flash logout` to manage this machine's platform")
    platform = client.find_running()
    if platform is None:
        console.print("no platform is running")
        return
    try:
        pid = platform.call("GET", "/api/v1/status")["pid"]
        platform.call("POST", "/api/v1/shutdown")
    except client.PlatformError as exc:
        _fail(str(exc))
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            console.print(f"platform {pid} stopped")
            return
        time.sleep(0.05)
    _fail(f"platform {pid} did not stop within {STOP_TIMEOUT_S:.0f}s")
