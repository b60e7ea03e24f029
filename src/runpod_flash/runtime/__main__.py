"""Entry point of a worker process started by the platform's provider.

`FLASH_WORKER_MODE` picks what it is: an HTTP worker (`live`: /execute; `deployed`: the
manifest's routes) or a queue worker that pulls jobs (`queue-live`, `queue-deployed`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from runpod_flash import config
from runpod_flash.runtime.lifeline import exit_with_parent
from runpod_flash.runtime.volume import attach_or_exit

MODES = ("live", "deployed", "queue-live", "queue-deployed")


def _worker(mode: str) -> Coroutine[Any, Any, None]:
    if mode.startswith("queue-"):
        from runpod_flash.runtime.queue_worker import run_queue_worker

        return run_queue_worker(mode.removeprefix("queue-"))
    from runpod_flash.runtime.server import serve

    if mode == "deployed":
        from runpod_flash.runtime.deployed import create_deployed_app

        app = create_deployed_app(
            Path(os.environ["FLASH_APP_DIR"]), os.environ["FLASH_RESOURCE_NAME"]
        )
        return serve(app)
    from runpod_flash.runtime.app import LiveWorkerApp

    live = LiveWorkerApp()
    return serve(live, live.mark_ready)


def main() -> None:
    attach_or_exit()  # first: a mount namespace covers only threads that do not exist yet
    from runpod_flash.runtime import output

    missing = [name for name in (config.ENV_PLATFORM_TOKEN, config.ENV_GATEWAY_SECRET)
               if not os.environ.get(name)]
    if missing:
        sys.exit(f"runpod_flash.runtime: {', '.join(missing)} not set; workers are started "
                 "by the platform, which sets them")
    mode = os.environ.get("FLASH_WORKER_MODE", "live")
    if mode not in MODES:
        sys.exit(f"runpod_flash.runtime: FLASH_WORKER_MODE={mode!r}; expected one of {MODES}")
    output.install()
    exit_with_parent()
    worker = _worker(mode)
    try:
        import uvloop

        uvloop.run(worker)
    except ImportError:
        asyncio.run(worker)


if __name__ == "__main__":
    main()
