"""Run by the build in a fresh interpreter, in the project directory, with FLASH_BUILD=1.

Imports the project's modules by name (never as `__main__`) and writes, as JSON lines to the
file named by argv[2], which module it is importing and finally what each decorated function's
`__remote_config__` holds. A file, not stdout, because user modules may print.
Standard library only (and `runpod_flash.project_modules`, itself standard library only), so
nothing here shadows or pre-empts the project's own imports.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

from runpod_flash.project_modules import import_project_module


def _emit(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, default=str) + "\n")
    out.flush()


def import_failure(module: str, exc: BaseException) -> dict[str, Any]:
    frames = [[f.filename, f.lineno] for f in traceback.extract_tb(exc.__traceback__)]
    if isinstance(exc, SyntaxError) and exc.filename:
        frames.append([exc.filename, exc.lineno or 1])
    return {
        "module": module,
        "frames": frames,
        "summary": traceback.format_exception_only(type(exc), exc)[-1].strip(),
        "missing_module": exc.name if isinstance(exc, ModuleNotFoundError) else None,
    }


def _describe(module: str, name: str) -> dict[str, Any] | None:
    config = getattr(getattr(sys.modules[module], name, None), "__remote_config__", None)
    if not isinstance(config, dict):
        return None
    resource = config["resource_config"]
    return {
        "resource": {
            "name": resource.name,
            "resource_type": type(resource).__name__,
            "is_live": resource.is_live,
            "is_load_balanced": resource.is_load_balanced,
            "spec": resource.platform_spec(),
        },
        "method": config["method"],
        "path": config["path"],
        "dependencies": list(config["dependencies"]),
        "system_dependencies": list(config["system_dependencies"]),
    }


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [os.getcwd(), *(p for p in sys.path if p != here)]
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    with open(sys.argv[2], "a", encoding="utf-8") as out:
        for module in request["modules"]:
            _emit(out, {"importing": module})
            try:
                import_project_module(module, Path.cwd())
            except BaseException as exc:  # SystemExit at import time is a failure too
                _emit(out, {"failed": import_failure(module, exc)})
                break
        else:
            functions = [_describe(module, name) for module, name in request["functions"]]
            _emit(out, {"functions": functions})
    # Threads or atexit hooks started by user modules must not keep the build waiting.
    os._exit(0)


if __name__ == "__main__":
    main()
