"""The control API for version history and rollback (`flash rollback`), token-protected.

A rollback is a deployment: it answers 202 with the deployment, polled at
`/api/v1/deployments/{id}` like one `flash deploy` starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash import strict_json
from runpod_flash.platform import versions
from runpod_flash.platform.deployments import Deployments
from runpod_flash.platform.versions import RollbackRefused

Handler = Callable[[Request], Awaitable[Response]]


async def _version_ref(request: Request) -> str | None:
    """The body's optional `version`: a version (prefix) or a number from the list."""
    raw = await request.body()
    try:
        body: Any = strict_json.loads(raw) if raw.strip() else {}
    except strict_json.InvalidJSON as exc:
        raise RollbackRefused(400, f"request body is not valid JSON: {exc}") from None
    version = body.get("version") if isinstance(body, dict) else False
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise RollbackRefused(400, 'the body is {"version": "<version or its number>"}, or '
                                   "{} for the version before the current one")
    return str(version)


def build_version_routes(deployments: Deployments, protected: Callable[[Handler], Handler]
                         ) -> list[Route]:
    def refusing(handler: Handler) -> Handler:
        async def answered(request: Request) -> Response:
            try:
                return await handler(request)
            except RollbackRefused as exc:
                return JSONResponse({"error": str(exc)}, exc.status)

        return protected(answered)

    async def list_versions(request: Request) -> Response:
        endpoint = deployments.deployed(request.path_params["endpoint_id"])
        kept = versions.kept(deployments.supervisor.store, endpoint.id)
        return JSONResponse({"endpoint": endpoint.id, "name": endpoint.name,
                             "current": endpoint.version, "keep": deployments.keep,
                             "versions": versions.listing(kept, endpoint.version)})

    async def rollback(request: Request) -> Response:
        deployment = deployments.rollback(request.path_params["endpoint_id"],
                                          await _version_ref(request))
        return JSONResponse(deployment.summary(), status_code=202)

    return [
        Route("/api/v1/endpoints/{endpoint_id}/versions", refusing(list_versions)),
        Route("/api/v1/endpoints/{endpoint_id}/rollback", refusing(rollback),
              methods=["POST"]),
    ]
