"""The platform's ASGI app: the gateway's hot path first, the control API for the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash import config
from runpod_flash.asgi import send_json
from runpod_flash.http.headers import Headers, first
from runpod_flash.platform.api import build_routes, token_guard
from runpod_flash.platform.apps import Apps
from runpod_flash.platform.apps_api import build_app_routes
from runpod_flash.platform.dashboard import Dashboard
from runpod_flash.platform.deployments import Deployments
from runpod_flash.platform.gateway import PREFIX, Gateway, authorized
from runpod_flash.platform.jobs import JobQueue
from runpod_flash.platform.log_retention import LogRetention, LogSweeper
from runpod_flash.platform.metrics import Metrics
from runpod_flash.platform.queue_api import build_queue_routes
from runpod_flash.platform.supervisor import Supervisor

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class FrontDoor:
    """Who may talk to the platform at all: requests addressed to it, from no browser page
    of another site.

    The platform listens on loopback, but a web page can still reach it: through DNS
    rebinding (a name of the page's own that resolves to 127.0.0.1, so `Host` is that name)
    or through a cross-origin request (its `Origin` is the page's). Both are refused; a
    request without `Host` or `Origin` (not from a browser) is not. More names and origins
    are allowed with FLASH_ALLOWED_HOSTS and FLASH_ALLOWED_ORIGINS (comma-separated; `*`
    allows any), e.g. for a proxy that forwards its own name.
    """

    def __init__(self, port: int, hosts: Iterable[str] = (), origins: Iterable[str] = ()) -> None:
        names = [*LOOPBACK_NAMES, *(f"{name}:{port}" for name in LOOPBACK_NAMES), *hosts]
        self._any_host = "*" in names
        self._hosts = frozenset(name.lower().encode("latin-1") for name in names)
        own = [f"{scheme}://{name}" for name in names for scheme in ("http", "https")]
        origins = [*own, *origins]
        self._any_origin = "*" in origins
        self._origins = frozenset(origin.lower().rstrip("/").encode("latin-1")
                                  for origin in origins)
        self._port = port

    @classmethod
    def from_env(cls, url: str) -> FrontDoor:
        """The platform at `url`, with the names and origins set in the environment."""
        parts = urlsplit(url)
        port = parts.port or 80
        own = [] if parts.hostname in LOOPBACK_NAMES else [parts.hostname or "",
                                                           f"{parts.hostname}:{port}"]
        return cls(port, [*own, *config.listed_setting(config.ENV_ALLOWED_HOSTS)],
                   config.listed_setting(config.ENV_ALLOWED_ORIGINS))

    def refusal(self, headers: Headers) -> tuple[int, str] | None:
        """None for a request the platform answers; else the status and the reason."""
        host = origin = None
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        return self.refusal_of(host, origin)

    def refusal_of(self, host: bytes | None, origin: bytes | None) -> tuple[int, str] | None:
        """`refusal`, given the request's `Host` and `Origin` values."""
        if host is not None and host not in self._hosts and not self._any_host and \
                host.lower() not in self._hosts:
            shown = host.decode("latin-1")
            return 421, (f"this platform does not answer to Host '{shown}' (DNS rebinding "
                         f"protection); use http://127.0.0.1:{self._port}, or allow the name "
                         f"with {config.ENV_ALLOWED_HOSTS}={shown} on the platform")
        if origin is not None and origin not in self._origins and not self._any_origin and \
                origin.lower().rstrip(b"/") not in self._origins:
            shown = origin.decode("latin-1")
            return 403, (f"cross-origin request from '{shown}' refused; allow that origin "
                         f"with {config.ENV_ALLOWED_ORIGINS}={shown} on the platform")
        return None


class PlatformApp:
    """Dispatches `/ep/...` straight to the gateway; the control and queue APIs (`/v2/...`)
    go through Starlette routing. The front door is checked first (the server's fast lane
    checks it itself for the requests it takes)."""

    def __init__(
        self,
        supervisor: Supervisor,
        token: str,
        api_key: str | None,
        request_shutdown: Callable[[], None],
    ) -> None:
        self.front_door = FrontDoor.from_env(supervisor.platform_url)
        # /metrics names endpoints and routes: with an API key, key or token holders only
        self._metrics_auth = tuple(f"Bearer {secret}".encode() for secret in (token, api_key)
                                   if secret) if api_key else ()
        presence = supervisor.presence
        self.jobs = JobQueue(supervisor.store, presence.on_demand, presence.worker_busy,
                             presence.serving)
        self.metrics = Metrics(supervisor, lambda endpoint_id: self.jobs.load(endpoint_id).waiting)
        self.jobs.on_finish = lambda job: self.metrics.jobs.labels(
            job.endpoint_id, job.status).inc()
        self.gateway = Gateway(supervisor, token, api_key, self.metrics)
        self.deployments = Deployments(supervisor, Apps(supervisor.store))
        supervisor.connect_queue(self.jobs)
        self.dashboard = Dashboard(supervisor, self.jobs, self.metrics, token, api_key)
        self.log_sweeper = LogSweeper(supervisor, LogRetention.from_env(config.logs_dir()))
        self.control = Starlette(routes=[
            *build_routes(supervisor, self.deployments, token, request_shutdown),
            *build_app_routes(supervisor, self.deployments.apps,
                             token_guard(token, supervisor.credentials)),
            Route("/metrics", self._metrics),
            *build_queue_routes(supervisor, self.jobs, token, api_key),
            *self.dashboard.routes(),
        ])

    async def _metrics(self, request: Request) -> Response:
        if self._metrics_auth and not authorized(
                first(request.scope["headers"], b"authorization"), *self._metrics_auth):
            return JSONResponse({"error": "/metrics needs the API key or the platform token: "
                                 "send 'Authorization: Bearer <key>'"}, 401,
                                {"www-authenticate": "Bearer"})
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":  # (the platform serves no websockets)
            refusal = self.front_door.refusal(scope["headers"])
            if refusal is not None:
                await send_json(send, refusal[0], {"error": refusal[1]})
                return
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await self.gateway(scope, receive, send)
        else:
            await self.control(scope, receive, send)
