"""Which project files a build sees: `.flashignore`, then `.gitignore`, then built-in rules."""

from __future__ import annotations

import os
from pathlib import Path

import pathspec

from .errors import BuildError

IGNORE_FILES = (".flashignore", ".gitignore")
# Secrets stay out of the artifact by default. These come first, so a `!.env` line in
# .flashignore (later rules win) ships the file on purpose.
DEFAULT_PATTERNS = (".env", ".env.*", "!.env.example")
BUILT_IN_PATTERNS = (
    ".build/", ".flash/", ".runpod/", ".venv/", "venv/", "*.tar.gz", ".git/",
    "__pycache__/", "*.pyc", "*.pyo", "*.pyd",
)


def _patterns(project_dir: Path) -> list[str]:
    lines: list[str] = list(DEFAULT_PATTERNS)
    for name in IGNORE_FILES:
        path = project_dir / name
        if path.is_file():
            lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
    lines.extend(BUILT_IN_PATTERNS)
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def collect_files(project_dir: Path) -> list[str]:
    """Relative POSIX paths of the regular files to build, sorted; symlinks are never followed.

    Ignored directories are pruned rather than filtered afterwards, so a large `.venv` costs
    nothing.
    """
    spec = pathspec.GitIgnoreSpec.from_lines(_patterns(project_dir))
    found: list[str] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        try:
            entries = list(os.scandir(project_dir / prefix))
        except OSError as exc:
            raise BuildError(
                f"Cannot read folder '{prefix or '.'}': {exc.strerror}; fix its permissions "
                "or add it to .flashignore"
            ) from None
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if not spec.match_file(f"{rel}/"):
                    pending.append(f"{rel}/")
            elif entry.is_file(follow_symlinks=False) and not spec.match_file(rel):
                found.append(rel)
    return sorted(found)
