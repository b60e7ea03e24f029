"""One version of the project, served (started by `processes.Child` with two file
descriptors: the listening socket and the status pipe).

Started ahead of need as a spare: it imports the server's libraries (most of its start-up
time) and waits for a line on stdin. Then it scans and imports the project and builds the
app, and serves it on the listening socket it inherited from the session once told to. It
reports on the status pipe, one JSON object a line: `{"prepared": {routes, warnings}}` or
`{"failed": message}` (this version cannot be served), `{"ready": true}` once it accepts
requests, `{"closed": true}` once it stopped accepting (handing over to the next version),
`{"endpoint": {id, name}}` for each live endpoint its calls provisioned (within 0.1 s, so
the session follows its log while the first call runs; the SDK's end-of-call replay of the
worker's output is off here). It exits when its
stdin closes (the session is gone).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import uvicorn

from runpod_flash.build import BuildError
from runpod_flash.devserver import output
from runpod_flash.devserver.app import serving_app
from runpod_flash.devserver.calls import EndpointTracker
from runpod_flash.devserver.loader import import_project
from runpod_flash.devserver.routes import DevRoute, plan_routes
from runpod_flash.stubs import live

GRACEFUL_SHUTDOWN_S = 5
ENDPOINT_SCAN_S = 0.1
# What a project's import and first call load, imported while this process is a spare.
PRELOAD = ("runpod_flash.resources", "runpod_flash.decorator", "runpod_flash.stubs.live",
           "runpod_flash.stubs.queue", "runpod_flash.serialization")


class Status:
    """The status pipe to the session (thread-safe, one JSON object per line)."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, **message: Any) -> None:
        with self._lock:
            self._out.write(json.dumps(message) + "\n")
            self._out.flush()


def _warm(route: DevRoute) -> None:
    """Provision the route's live endpoint and start its first worker, with a no-op call on
    the same resource and dependency set (the same endpoint)."""
    from runpod_flash import remote
    from runpod_flash.devserver.warmup import noop

    target = route.target
    routing = {"method": "POST", "path": "/_flash_warmup"} \
        if target.resource.is_load_balanced else {}
    probe = remote(target.resource, dependencies=target.dependencies,
                   system_dependencies=target.system_dependencies, **routing)(noop)
    probe()


def warm_up(routes: list[DevRoute], tracker: EndpointTracker, log: TextIO) -> None:
    """`--auto-provision`: every live endpoint's first worker, in parallel, before serving.
    A failure is a warning: the first request to that endpoint provisions it again."""
    started = time.monotonic()
    unique: dict[tuple[Any, ...], DevRoute] = {}
    for route in routes:
        if route.mode == "live":
            target = route.target
            key = (target.resource.config_hash, tuple(sorted(target.dependencies)),
                   tuple(sorted(target.system_dependencies)))
            unique.setdefault(key, route)
    if not unique:
        return
    log.write(f"Provisioning {len(unique)} endpoint(s): "
              f"{', '.join(sorted(r.endpoint for r in unique.values()))}\n")
    log.flush()

    def one(route: DevRoute) -> None:
        output.current_endpoint.set(route.endpoint)
        try:
            _warm(route)
        except Exception as exc:
            log.write(f"warning: could not provision '{route.endpoint}': "
                      f"{type(exc).__name__}: {exc}\n")
        tracker.after_call(route.target)

    with ThreadPoolExecutor(max_workers=min(8, len(unique))) as pool:
        list(pool.map(one, unique.values()))
    log.write(f"Provisioned in {time.monotonic() - started:.1f}s\n")
    log.flush()


def scan_endpoints(tracker: EndpointTracker) -> None:
    """Report new live endpoints as they are provisioned (a daemon thread, for life)."""
    while True:
        time.sleep(ENDPOINT_SCAN_S)
        try:
            tracker.scan()
        except Exception:  # a report on a closed pipe: the session is gone
            return


class _Server(uvicorn.Server):
    """uvicorn that reports when it accepts requests, and can stop accepting at once."""

    def __init__(self, config: uvicorn.Config, status: Status) -> None:
        super().__init__(config)
        self._status = status
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._status.send(ready=True)

    def _hand_over(self) -> None:
        """Stop accepting and close idle kept-alive connections now, so every later request
        reaches the next version; requests in progress finish during the exit."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        self.should_exit = True
        self._status.send(closed=True)

    def follow_commands(self) -> None:
        """The session's commands on stdin, from a thread; stdin closed: exit."""
        for line in sys.stdin:
            if json.loads(line).get("close") and self._loop is not None:
                self._loop.call_soon_threadsafe(self._hand_over)
        self.should_exit = True


def _load(status: Status, log: TextIO) -> tuple[Any, list[DevRoute], EndpointTracker] | None:
    """The app of the project as it is now, reported as prepared (None: reported failed)."""
    project_dir = Path.cwd()
    sys.path.insert(0, str(project_dir))
    started = time.monotonic()
    warnings: list[str] = []
    tracker = EndpointTracker(lambda endpoint_id, name: status.send(
        endpoint={"id": endpoint_id, "name": name}))
    try:
        found = import_project(project_dir, warnings.append)
        routes = plan_routes(found)
        app = serving_app(routes, tracker, log)
    except BuildError as exc:
        status.send(failed=str(exc), warnings=warnings)
        return None
    status.send(prepared={"routes": [r.describe() for r in routes], "warnings": warnings,
                          "seconds": round(time.monotonic() - started, 3)})
    return app, routes, tracker


def main() -> int:
    """Spare, then load (`{"go": ...}`), then serve (`{"serve": true}`) when the session has
    the previous version stop accepting; see the module docstring for the reports."""
    listen_fd, status_fd = int(sys.argv[1]), int(sys.argv[2])
    status = Status(status_fd)
    for module in PRELOAD:
        importlib.import_module(module)
    line = sys.stdin.readline()  # a spare waits here, its libraries imported
    if not line.strip():
        return 0
    request = json.loads(line)
    log = output.install()
    live.REPLAY_OUTPUT = False  # the session prints the workers' log lines as they come
    loaded = _load(status, log)
    if loaded is None:
        return 1
    app, routes, tracker = loaded
    threading.Thread(target=scan_endpoints, args=(tracker,), daemon=True,
                     name="flash-run-endpoints").start()
    if request.get("auto_provision"):
        warm_up(routes, tracker, log)
    if not json.loads(sys.stdin.readline() or "{}").get("serve"):
        return 0
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    server = _Server(config, status)
    threading.Thread(target=server.follow_commands, daemon=True).start()
    asyncio.run(server.serve(sockets=[socket.socket(fileno=listen_fd)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
