"""Imports point down: only the platform imports the platform.

The SDK, the worker runtime, the CLI and the shared modules reach the platform through its
HTTP contracts, so each can be read, tested and replaced on its own (DESIGN.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import runpod_flash

PACKAGE = Path(runpod_flash.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_nothing_outside_the_platform_imports_it() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in _imported_modules(path)
            if name == "runpod_flash.platform" or name.startswith("runpod_flash.platform.")
        )
        for path in PACKAGE.rglob("*.py")
        if "platform" not in path.relative_to(PACKAGE).parts
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_layering_check_sees_imports() -> None:
    """The check above would catch a violation (it reads function-level imports too)."""
    imports = _imported_modules(PACKAGE / "platform" / "gateway.py")
    assert "runpod_flash.platform.supervisor" in imports
    assert "runpod_flash.http.aio" in imports
