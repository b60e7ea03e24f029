"""The platform's ASGI app: the gateway's hot path first, the control API for the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runpod_flash.platform.api import build_routes, token_guard
from runpod_flash.platform.apps import Apps
from runpod_flash.platform.apps_api import build_app_routes
from runpod_flash.platform.deployments import Deployments
from runpod_flash.platform.gateway import PREFIX, Gateway
from runpod_flash.platform.jobs import JobQueue
from runpod_flash.platform.metrics import Metrics
from runpod_flash.platform.queue_api import build_queue_routes
from runpod_flash.platform.supervisor import Supervisor


class PlatformApp:
    """Dispatches `/ep/...` straight to the gateway; the control and queue APIs (`/v2/...`)
    go through Starlette routing."""

    def __init__(
        self,
        supervisor: Supervisor,
        token: str,
        api_key: str | None,
        request_shutdown: Callable[[], None],
    ) -> None:
        self.jobs = JobQueue(supervisor.store, supervisor.on_demand, supervisor.worker_busy,
                             supervisor.serving)
        self.metrics = Metrics(supervisor, lambda endpoint_id: self.jobs.load(endpoint_id).waiting)
        self.jobs.on_finish = lambda job: self.metrics.jobs.labels(
            job.endpoint_id, job.status).inc()
        self.gateway = Gateway(supervisor, token, api_key, self.metrics)
        self.deployments = Deployments(supervisor, Apps(supervisor.store))
        supervisor.on_worker_exit = self.jobs.worker_gone
        supervisor.on_worker_draining = self.jobs.release_worker
        supervisor.queue_load = self.jobs.load
        self.control = Starlette(routes=[
            *build_routes(supervisor, self.deployments, token, request_shutdown),
            *build_app_routes(supervisor, self.deployments.apps, token_guard(token)),
            Route("/metrics", self._metrics),
            *build_queue_routes(supervisor, self.jobs, token, api_key),
        ])

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await self.gateway(scope, receive, send)
        else:
            await self.control(scope, receive, send)
