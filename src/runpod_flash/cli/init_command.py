"""`flash init [NAME|.]`: a starter project that `flash build` and `flash run` accept as is.

The templates are package data (`runpod_flash/scaffold/`). Dot-files are stored with a `_`
in place of the dot (`_gitignore` becomes `.gitignore`) so they do not act on this
repository's own git and build while they sit in the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from runpod_flash.cli.output import console, fail

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # 3.11+; only annotations use it

PLACEHOLDER = "{{project_name}}"
# A directory name that is also a valid distribution name for the generated pyproject.toml.
_VALID_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_FALLBACK_NAME = "flash-project"


class InitError(ValueError):
    """The project cannot be created as asked; the message says what to do instead."""


@dataclass(frozen=True)
class Template:
    """One scaffold file: where it goes in the project and where its text comes from."""

    target: str
    source: Traversable


def templates() -> list[Template]:
    """The scaffold files, sorted by their name in the project."""
    found = [
        Template("." + entry.name[1:] if entry.name.startswith("_") else entry.name, entry)
        for entry in files("runpod_flash").joinpath("scaffold").iterdir()
        if entry.is_file() and not entry.name.startswith("__")
    ]
    return sorted(found, key=lambda t: t.target)


def resolve_target(name: str | None, cwd: Path) -> tuple[Path, str]:
    """The project directory and name for `flash init [NAME]`; raises InitError for bad NAME."""
    if name is None or name == ".":
        # The current directory keeps its name; only the pyproject/endpoint name is cleaned.
        cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", cwd.resolve().name).strip("-._")
        return cwd, cleaned or _FALLBACK_NAME
    if not name.strip():
        raise InitError("the project name is empty; pass a name, e.g. `flash init my-project`, "
                        "or `.` for the current directory")
    if "/" in name or "\\" in name or name in ("..", "."):
        raise InitError(
            f"project name {name!r} is a path; NAME is the new directory's name (created in "
            "the current directory): cd to the parent and run `flash init my-project`"
        )
    if not _VALID_NAME.fullmatch(name):
        raise InitError(
            f"project name {name!r} is not valid: use letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit, e.g. `flash init my-project`"
        )
    return cwd / name, name


def scaffold(project_dir: Path, name: str, force: bool = False) -> list[str]:
    """Write the scaffold into `project_dir`; return the files written, in order.

    Existing files are listed in the error and left untouched unless `force`; other files
    already in the directory are never touched.
    """
    if project_dir.exists() and not project_dir.is_dir():
        raise InitError(f"{project_dir} exists and is not a directory; pick another name")
    chosen = templates()
    existing = [t.target for t in chosen if (project_dir / t.target).exists()]
    blocked = [t for t in existing if (project_dir / t).is_dir()]
    if blocked:
        raise InitError(f"{project_dir} has directories named {', '.join(blocked)}; "
                        "move them away or pick another project name")
    if existing and not force:
        raise InitError(
            f"{project_dir} already has {', '.join(existing)}; nothing was written. "
            "Re-run with --force to overwrite them, or pick another project name"
        )
    project_dir.mkdir(parents=True, exist_ok=True)
    for template in chosen:
        text = template.source.read_text(encoding="utf-8").replace(PLACEHOLDER, name)
        (project_dir / template.target).write_text(text, encoding="utf-8")
    return [t.target for t in chosen]


def _next_steps(project_dir: Path, cwd: Path) -> list[str]:
    steps = [] if project_dir == cwd else [f"cd {project_dir.name}"]
    return [
        *steps,
        "cp .env.example .env      # optional: variables your endpoints need",
        "flash run                 # serves every function on http://localhost:8888",
        "open http://localhost:8888/docs, or try the curl commands in README.md",
        "flash deploy              # serve the endpoints from the platform",
    ]


def init(
    name: str = typer.Argument(
        None, help="Directory to create (default: the current directory, also `.`)."
    ),
    force: bool = typer.Option(
        False, "--force", "-f", help="Overwrite scaffold files that already exist."
    ),
) -> None:
    """Create a starter Flash project: a queue worker, a load-balanced API, config files."""
    cwd = Path.cwd()
    try:
        project_dir, project = resolve_target(name, cwd)
        written = scaffold(project_dir, project, force)
    except InitError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the project: {exc}; check the directory's permissions")
    console.print(f"Created Flash project [bold]{project}[/bold] in {project_dir}:")
    for target in written:
        console.print(f"  {target}")
    console.print("\nNext steps:")
    for step in _next_steps(project_dir, cwd):
        console.print(f"  {step}")
