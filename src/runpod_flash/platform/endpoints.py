"""What the platform knows about an endpoint and its workers (state only, no behaviour)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runpod_flash.control import slug
from runpod_flash.dependencies import APPROVED_KEY
from runpod_flash.envfile import mask_env
from runpod_flash.platform.credentials import GATEWAY_SECRET_HEADER
from runpod_flash.platform.providers.base import WorkerProcess

LB_PREFIX = "/ep"
QUEUE_PREFIX = "/v2"


def endpoint_path(endpoint_id: str, spec: dict[str, Any]) -> str:
    """Where the gateway serves an endpoint: `/v2/<id>` for queues, `/ep/<id>` otherwise."""
    return f"{QUEUE_PREFIX if spec.get('type') == 'QB' else LB_PREFIX}/{endpoint_id}"


def spec_digest(spec: dict[str, Any]) -> str:
    """The identity of a spec; an approval to install system packages is a permission the
    caller gives, not part of what the endpoint is."""
    identity = {key: value for key, value in spec.items() if key != APPROVED_KEY}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def spec_version(spec: dict[str, Any]) -> str:
    """The version the platform shows for a spec: the start of its digest."""
    return spec_digest(spec)[:12]


def live_endpoint_id(spec: dict[str, Any]) -> str:
    """Same resource config and environment → same live endpoint, from any caller."""
    return f"live-{slug(str(spec.get('name', 'endpoint')))}-{spec_digest(spec)[:8]}"


@dataclass(eq=False)
class Worker:
    id: str
    endpoint_id: str
    version: str
    log_path: Path
    gpus: list[str]
    state: str = "starting"  # starting -> ready -> draining/stopping -> stopped | dead
    port: int | None = None
    host: str = "127.0.0.1"  # where the gateway reaches it (its node's address)
    node: str | None = None  # the provider's node id; None: this machine
    process: WorkerProcess | None = None
    in_flight: int = 0
    failed_pings: int = 0
    gateway_secret: bytes = b""  # sent on every request to it (platform.credentials)
    secret_line: bytes = b""  # that header, rendered once (the gateway's fast lane sends it)
    started_at: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)  # last request or job
    last_seen: float = field(default_factory=time.monotonic)  # last sign of life

    def set_gateway_secret(self, secret: bytes) -> None:
        self.gateway_secret = secret
        self.secret_line = b"%b: %b\r\n" % (GATEWAY_SECRET_HEADER, secret)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "version": self.version,
            "pid": self.process.pid if self.process else None,
            "port": self.port,
            "host": self.host,
            "node": self.node,
            "in_flight": self.in_flight,
            "gpus": self.gpus,
            "log": str(self.log_path),
        }


@dataclass(eq=False)
class Endpoint:
    id: str
    name: str
    kind: str  # "live" | "deployed"
    spec: dict[str, Any]
    status: str = "building"  # building -> ready | failed
    python: str | None = None
    error: str | None = None
    warning: str | None = None
    progress: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    workers: dict[str, Worker] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_start_failure: str | None = None
    start_failures: int = 0  # in a row; workers start again only after a growing pause
    retry_start_at: float = 0.0
    waiting: int = 0  # requests waiting for a worker
    stats: dict[str, int] = field(default_factory=lambda: {
        "requests": 0, "errors": 0, "cold_starts": 0, "worker_failures": 0})
    deployed_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)  # by a caller (live endpoints)

    version: str = ""  # digest of `spec`; kept with it by `use_spec`, read on every request

    def __post_init__(self) -> None:
        self.use_spec(self.spec)

    def use_spec(self, spec: dict[str, Any]) -> None:
        self.spec, self.version = spec, spec_version(spec)

    def notify(self) -> None:
        """Wake everyone waiting for a worker state change on this endpoint."""
        event, self.changed = self.changed, asyncio.Event()
        event.set()

    def live_workers(self) -> list[Worker]:
        """Workers of the current version that are starting or serving."""
        return [
            w for w in self.workers.values()
            if w.state in ("starting", "ready") and w.version == self.version
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "app": self.spec.get("app"),
            "environment": self.spec.get("environment"),
            "type": self.spec.get("type", "LB"),
            "status": self.status,
            "error": self.error,
            "warning": self.warning,
            "progress": list(self.progress),
            "path": endpoint_path(self.id, self.spec),
            "version": self.version,
            "routes": sorted(self.spec.get("routes", {})),
            "env": mask_env(self.spec.get("env")),  # names only: values never leave the platform
            "workersMin": self.spec.get("workersMin", 0),
            "workersMax": self.spec.get("workersMax", 1),
            "deployed_at": self.deployed_at,
            "last_start_failure": self.last_start_failure,
            "start_failures": self.start_failures,
            "waiting": self.waiting,
            "stats": dict(self.stats),
            "workers": [w.summary() for w in self.workers.values()],
        }
