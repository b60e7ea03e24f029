"""The web dashboard at `/dashboard`: endpoints, workers, charts, log tails, the queue and the
platform itself, on the platform's own port.

Server-rendered (Jinja2 templates) with a little vendored JavaScript for refreshing, charts
(SVG drawn by hand) and the log tail (server-sent events): no build step, nothing loaded
from the internet. Always behind a login (see `auth`); the one-time login links of
`flash dashboard` are minted by the token-protected `POST /api/v1/dashboard/login-codes`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runpod_flash import config
from runpod_flash.platform.api import token_guard
from runpod_flash.platform.dashboard.auth import CODE_TTL_S, DashboardAuth
from runpod_flash.platform.dashboard.history import History, Sampler
from runpod_flash.platform.dashboard.views import PREFIX, Views
from runpod_flash.platform.jobs import JobQueue
from runpod_flash.platform.metrics import Metrics
from runpod_flash.platform.supervisor import Supervisor

LOGIN_CODES_PATH = "/api/v1/dashboard/login-codes"
STATE_DB = "state.db"  # the store's file in FLASH_HOME (platform/server.py opens it)


class Dashboard:
    """The dashboard's routes, and its sampler, to start and stop with the platform."""

    def __init__(self, supervisor: Supervisor, jobs: JobQueue, metrics: Metrics, token: str,
                 api_key: str | None, state_db: Path | None = None) -> None:
        self.auth = DashboardAuth(token, api_key)
        self.history = History()
        self.sampler = Sampler(supervisor, jobs, metrics, self.history)
        self.views = Views(supervisor, jobs, self.auth, self.history, self.sampler.interval_s,
                           state_db or config.flash_home() / STATE_DB)
        self._token = token

    def routes(self) -> list[BaseRoute]:
        async def mint_login_code(request: Request) -> Response:
            """A one-time login link (for `flash dashboard`); the client puts its own
            platform URL in front of `path`."""
            path = f"{PREFIX}/login?{urlencode({'code': self.auth.mint_code()})}"
            return JSONResponse({"path": path, "url": str(request.base_url).rstrip("/") + path,
                                 "expires_in_s": CODE_TTL_S}, 201)

        return [Route(LOGIN_CODES_PATH, token_guard(self._token)(mint_login_code),
                      methods=["POST"]),
                *self.views.routes()]

    def start(self) -> None:
        """Begin sampling (from the event loop, once the platform serves)."""
        self.sampler.start()

    def stop(self) -> None:
        """Stop sampling and end open log streams, so the platform stops promptly."""
        self.sampler.stop()
        self.views.close()
