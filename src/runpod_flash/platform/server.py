"""Running the platform process: one per FLASH_HOME, on 127.0.0.1, published in platform.json."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import gc
import json
import logging
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import IO

import uvicorn

from runpod_flash import config
from runpod_flash.http.server_limits import ServerLimits, raise_open_file_limit
from runpod_flash.platform.app import PlatformApp
from runpod_flash.platform.fastlane import GatewayProtocol
from runpod_flash.platform.providers import make_provider
from runpod_flash.platform.store import Store
from runpod_flash.platform.supervisor import Supervisor

logger = logging.getLogger("runpod_flash.platform")

IDLE_EXIT_S = float(os.environ.get("FLASH_PLATFORM_IDLE_EXIT", "1800"))
GC_THRESHOLD = 20_000  # young-generation allocations between collections (default 700)


class AlreadyRunning(RuntimeError):
    """Another platform holds this FLASH_HOME."""


def load_or_create_token() -> str:
    """The platform token: `FLASH_PLATFORM_TOKEN`, else a secret kept in FLASH_HOME/token."""
    explicit = os.environ.get(config.ENV_PLATFORM_TOKEN)
    if explicit:
        return explicit
    path = config.flash_home() / "token"
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def _hold_instance_lock() -> IO[str]:
    handle = open(config.flash_home() / "platform.pid.lock", "a+")  # noqa: SIM115 (held for life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunning(
            f"a platform is already running for {config.flash_home()}; "
            "use `flash platform status` or `flash platform stop`"
        ) from None
    return handle


def _bind() -> socket.socket:
    explicit = bool(os.environ.get(config.ENV_PLATFORM_PORT))
    port = config.requested_platform_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.platform_host(), port))
    except OSError as exc:
        if explicit or exc.errno != errno.EADDRINUSE:
            sock.close()
            raise
        logger.warning("port %s is taken; the platform uses a free port instead", port)
        sock.bind((config.platform_host(), 0))
    return sock


def _publish(path: Path, url: str) -> None:
    """Atomically write platform.json so readers never see half a file."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "pid": os.getpid(), "started_at": time.time()}, handle)
    os.replace(tmp, path)


async def _exit_when_idle(supervisor: Supervisor, server: uvicorn.Server) -> None:
    """A platform nobody uses goes away on its own; the next call starts a fresh one."""
    idle_since = time.monotonic()
    while not server.should_exit:
        await asyncio.sleep(min(30.0, IDLE_EXIT_S))
        if any(ep.workers for ep in supervisor.endpoints.values()):
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE_EXIT_S:
            logger.info("idle for %.0fs; platform exiting", IDLE_EXIT_S)
            server.should_exit = True


async def _release_long_polls_on_exit(app: PlatformApp, server: uvicorn.Server) -> None:
    """Stopping (API call or signal): answer workers' long polls so shutdown is prompt."""
    while not server.should_exit:
        await asyncio.sleep(0.1)
    app.jobs.release_waiters()
    app.dashboard.stop()


async def serve() -> None:
    lock = _hold_instance_lock()
    token = load_or_create_token()
    raise_open_file_limit()  # before the limits: they fit the connections in it
    # Each client connection of the gateway may hold one to a worker as well.
    limits = ServerLimits.from_env(fds_per_connection=2)
    sock = _bind()
    url = f"http://{config.platform_host()}:{sock.getsockname()[1]}"
    store = Store(config.flash_home() / "state.db")
    supervisor = Supervisor(store, url, token, make_provider(config.logs_dir()))
    server = uvicorn.Server(
        uvicorn.Config(
            None, log_level="warning", access_log=False, lifespan="off",
            timeout_keep_alive=limits.keep_alive_s, timeout_graceful_shutdown=10,
            proxy_headers=False,  # loopback by default: no proxy's X-Forwarded-* to trust
        )
    )

    def request_shutdown(why: str = "asked to by the control API") -> None:
        if not server.should_exit:
            logger.warning("platform stopping: %s", why)
        server.should_exit = True

    api_key = os.environ.get("FLASH_API_KEY") or None
    app = PlatformApp(supervisor, token, api_key, request_shutdown)
    # uvicorn re-raises a caught SIGTERM once it has served, which would kill this process
    # before it stops its workers; the platform handles the signals itself instead.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_shutdown, f"received {sig.name}")
    server.config.app = app
    server.config.http = GatewayProtocol.for_gateway(app.gateway, app.front_door, limits)
    supervisor.start()
    app.jobs.start()
    app.dashboard.start()
    app.log_sweeper.start()
    # Everything built so far lives as long as the platform: out of the collector's way.
    # Each proxied request makes short-lived objects, and full collections scanning the
    # imported modules showed up in the gateway's profile.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.005)
    info = config.platform_info_path()
    _publish(info, url)
    logger.warning("openflash platform %s listening on %s", os.getpid(), url)
    if config.platform_host() != config.PLATFORM_HOST:
        logger.warning("listening beyond this machine: the token and API key guard every "
                       "call, but the traffic is plain HTTP; keep it on a private network "
                       "or behind TLS")
    idle = asyncio.create_task(_exit_when_idle(supervisor, server))
    releaser = asyncio.create_task(_release_long_polls_on_exit(app, server))
    try:
        await serving
    finally:
        idle.cancel()
        releaser.cancel()
        app.log_sweeper.stop()
        with contextlib.suppress(FileNotFoundError):
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()
        app.jobs.stop()
        await supervisor.shutdown()
        app.gateway.close()
        store.close()
        lock.close()


def run() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())
