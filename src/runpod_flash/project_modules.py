"""Importing a project's module by its dotted path, the same way in the build, `flash run`
and deployed workers.

Repositories of examples put each project in a numbered folder (`01_getting_started/
03_mixed_workers/pipeline.py`): such a module can be imported by its path, but its own
sibling imports (`from cpu_worker import preprocess`) only work with its folder on
`sys.path`, as when it runs as a script. The folder is put there for the import, and the
siblings it loaded by bare name are forgotten afterwards, so the next example's
`cpu_worker` is its own file, not the first one's. Standard library only: the build's
import child uses it before any project module is imported.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def needs_own_folder(module: str) -> bool:
    """Whether a module's dotted path has a part that is not an identifier (`01_x.y`)."""
    return not all(part.isidentifier() for part in module.split("."))


def import_project_module(module: str, project_dir: Path) -> ModuleType:
    """Import `module` (a dotted path under `project_dir`, which is on `sys.path`)."""
    if module in sys.modules or not needs_own_folder(module):
        return importlib.import_module(module)
    package = module.rsplit(".", 1)[0]
    folder = (Path(project_dir) / Path(*package.split("."))).resolve()
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module)
    finally:
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            if file and not name.startswith(package) and Path(file).resolve().is_relative_to(
                folder
            ):
                del sys.modules[name]  # a sibling loaded by bare name; its importer keeps it
