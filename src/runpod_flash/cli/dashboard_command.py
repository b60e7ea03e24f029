"""`flash dashboard`: open the platform's web dashboard, already signed in.

The browser cannot be handed the platform token, so the command asks the platform (with the
token, through the control API) for a one-time login link, valid for a minute, and opens it;
`--url` prints it instead, for scripts and for a browser on another machine.
"""

from __future__ import annotations

import webbrowser

import typer

from runpod_flash.cli.output import console, fail
from runpod_flash.control import PlatformError, ensure_platform

LOGIN_CODES_PATH = "/api/v1/dashboard/login-codes"


def dashboard(
    url_only: bool = typer.Option(
        False, "--url", help="Print the one-time login link instead of opening a browser."),
) -> None:
    """Open the web dashboard (endpoints, workers, charts, logs, queue) signed in."""
    try:
        platform = ensure_platform()
        answer = platform.call("POST", LOGIN_CODES_PATH)
    except (PlatformError, ConnectionError) as exc:
        fail(str(exc))
    link = platform.url + answer["path"]  # the address this machine reaches it by
    if url_only:
        typer.echo(link)
        return
    if not webbrowser.open(link):
        fail(f"no browser could be opened here; open this link within "
             f"{answer['expires_in_s']:.0f} s (it works once): {link}")
    console.print(f"opened the dashboard in your browser (the link works once, within "
                  f"{answer['expires_in_s']:.0f} s)")
