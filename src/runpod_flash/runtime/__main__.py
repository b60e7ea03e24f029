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
    app = LiveWorkerApp(token)
    try:
        import uvloop

        uvloop.run(serve(app))
    except ImportError:
        asyncio.run(serve(app))


if __name__ == "__main__":
    main()
