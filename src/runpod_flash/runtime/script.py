"""`python -m runpod_flash.runtime.script worker.py`: run a user's worker script (such as a
`runpod.serverless.start` handler) as a platform worker, tied to the platform's life."""

from __future__ import annotations

import os
import runpy
import sys

from runpod_flash import config
from runpod_flash.runtime.lifeline import exit_with_parent
from runpod_flash.runtime.volume import attach_or_exit


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m runpod_flash.runtime.script <script.py> [args...]")
    app_dir = os.environ.get("FLASH_APP_DIR")
    if app_dir:  # a deployed worker: its script must be a file of its artifact
        try:
            config.path_inside(app_dir, sys.argv[1])
        except ValueError as exc:
            sys.exit(f"worker script {exc}")
    attach_or_exit()  # before the lifeline thread: a mount namespace is per thread
    exit_with_parent()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
