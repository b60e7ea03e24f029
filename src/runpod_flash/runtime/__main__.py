"""Entry point of a worker process started by the platform's provider."""

from __future__ import annotations

import asyncio
import os
import sys

from runpod_flash import config


def main() -> None:
    from runpod_flash.runtime import output
    from runpod_flash.runtime.app import LiveWorkerApp
    from runpod_flash.runtime.server import serve

    token = os.environ.get(config.ENV_PLATFORM_TOKEN)
    if not token:
        sys.exit(f"runpod_flash.runtime: {config.ENV_PLATFORM_TOKEN} is not set; "
                 "workers are started by the platform, which sets it")
    output.install()
    if os.environ.get("FLASH_WORKER_MODE") == "deployed":
        from pathlib import Path

        from runpod_flash.runtime.deployed import create_deployed_app

        app = create_deployed_app(
            Path(os.environ["FLASH_APP_DIR"]), os.environ["FLASH_RESOURCE_NAME"]
        )
        mark_ready = None
    else:
        live = LiveWorkerApp(token)
        app, mark_ready = live, live.mark_ready
    try:
        import uvloop

        uvloop.run(serve(app, mark_ready))
    except ImportError:
        asyncio.run(serve(app, mark_ready))


if __name__ == "__main__":
    main()
