"""Console output shared by the commands: one-line failures, progress lines."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def fail(message: str) -> NoReturn:
    """Print a one-line reason and exit non-zero."""
    errors.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def progress(line: str) -> None:
    errors.print(f"[dim]•[/dim] {line}")
