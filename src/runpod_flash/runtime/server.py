"""Serving a worker app: bind a free loopback port, then tell the platform it is up."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from runpod_flash import config
from runpod_flash.http.blocking import request
from runpod_flash.http.server_limits import LimitedHttpProtocol, ServerLimits
from runpod_flash.runtime.gate import GatewayOnly

READY_TIMEOUT_S = 10.0


def _report_ready(platform_url: str, token: str, worker_id: str, port: int) -> None:
    status, body = request(
        "POST", f"{platform_url}/internal/workers/{worker_id}/ready",
        json.dumps({"port": port, "pid": os.getpid()}).encode(),
        {"Authorization": f"Bearer {token}"}, READY_TIMEOUT_S,
    )
    if status >= 300:
        raise RuntimeError(f"the platform refused this worker ({status}): {body[:300]!r}")


async def serve(app: Any, mark_ready: Callable[[], None] | None = None) -> None:
    """Serve `app` on 127.0.0.1 and register with the platform once it accepts connections;
    only requests carrying the worker's gateway secret reach it (`runtime.gate`)."""
    secret = os.environ.get(config.ENV_GATEWAY_SECRET)
    if not secret:
        raise RuntimeError(f"{config.ENV_GATEWAY_SECRET} is not set; workers are started by "
                           "the platform, which sets it")
    app = GatewayOnly(app, secret)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    host = os.environ.get(config.ENV_WORKER_HOST) or config.PLATFORM_HOST  # its node's
    sock.bind((host, int(os.environ.get("FLASH_WORKER_PORT", "0"))))
    port = sock.getsockname()[1]
    limits = ServerLimits.from_env()  # the platform's, inherited through the environment
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off",
            timeout_keep_alive=limits.keep_alive_s, http=LimitedHttpProtocol.bound(limits),
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.005)
    if mark_ready is not None:
        mark_ready()
    platform_url = os.environ.get(config.ENV_PLATFORM_URL)
    if platform_url:
        await asyncio.to_thread(
            _report_ready,
            platform_url,
            os.environ.get(config.ENV_PLATFORM_TOKEN, ""),
            os.environ.get(config.ENV_WORKER_ID, ""),
            port,
        )
    await serving
