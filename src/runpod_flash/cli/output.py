"""Console output shared by the commands: one-line failures, progress lines, and control
API calls that fail the command with the platform's reason."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def fail(message: str) -> NoReturn:
    """Print a one-line reason and exit non-zero."""
    errors.print(f"[red]error:[/red] {message}", soft_wrap=True)  # whole, for copy and grep
    raise typer.Exit(1)


def progress(line: str) -> None:
    errors.print(f"[dim]•[/dim] {line}", soft_wrap=True)


def call_platform(method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One control API call on the platform (started when none runs); its error fails the
    command with the platform's own message."""
    from runpod_flash import control

    try:
        return control.ensure_platform().call(method, path, body)
    except (control.PlatformError, ConnectionError) as exc:
        fail(str(exc))
