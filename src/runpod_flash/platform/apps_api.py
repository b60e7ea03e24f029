"""The control API for apps and environments (`flash app`, `flash env`), token-protected.

An environment's endpoints are the deployed endpoints whose spec names it; deleting an
environment (or an app) undeploys them first. The CLI asks before calling a delete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash import strict_json
from runpod_flash.platform.apps import AppError, Apps
from runpod_flash.platform.supervisor import Supervisor

Handler = Callable[[Request], Awaitable[Response]]


def build_app_routes(
    supervisor: Supervisor, apps: Apps, protected: Callable[[Handler], Handler]
) -> list[Route]:
    def endpoints_of(app: str, environment: str | None = None) -> list[dict[str, Any]]:
        return [
            endpoint.summary() for endpoint in supervisor.endpoints.values()
            if endpoint.kind == "deployed" and endpoint.spec.get("app") == app
            and (environment is None or endpoint.spec.get("environment") == environment)
        ]

    def environment_view(app: str, environment: str) -> dict[str, Any]:
        return {"app": app, "name": environment, "endpoints": endpoints_of(app, environment)}

    def app_view(app: str) -> dict[str, Any]:
        return {"name": app, "environments": [
            environment_view(app, env) for env in apps.environments(app)]}

    async def undeploy(app: str, environment: str | None) -> list[str]:
        removed = []
        for summary in endpoints_of(app, environment):
            if await supervisor.remove_endpoint(summary["id"]):
                removed.append(summary["id"])
        return removed

    async def named(request: Request) -> str:
        try:
            body = strict_json.loads(await request.body())
        except strict_json.InvalidJSON as exc:
            raise AppError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or "name" not in body:
            raise AppError(422, 'the body needs a "name", e.g. {"name": "staging"}')
        return str(body["name"])

    def answering(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)

        return protected(guarded)

    async def list_apps(request: Request) -> Response:
        return JSONResponse({"apps": [app_view(app) for app in apps.names()]})

    async def create_app(request: Request) -> Response:
        app = await named(request)
        created = apps.create_app(app)
        return JSONResponse(app_view(app), status_code=201 if created else 200)

    async def get_app(request: Request) -> Response:
        return JSONResponse(app_view(request.path_params["app"]))

    async def delete_app(request: Request) -> Response:
        app = request.path_params["app"]
        apps.environments(app)  # 404 first, before anything is undeployed
        removed = await undeploy(app, None)
        apps.forget_app(app)
        return JSONResponse({"deleted": app, "undeployed": removed})

    async def list_environments(request: Request) -> Response:
        app = request.path_params["app"]
        return JSONResponse({"app": app, "environments": app_view(app)["environments"]})

    async def create_environment(request: Request) -> Response:
        app, environment = request.path_params["app"], await named(request)
        created = apps.create_environment(app, environment)
        return JSONResponse(environment_view(app, environment),
                            status_code=201 if created else 200)

    def known_environment(request: Request) -> tuple[str, str]:
        app, environment = request.path_params["app"], request.path_params["environment"]
        if environment not in apps.environments(app):
            known = ", ".join(apps.environments(app)) or "none"
            raise AppError(404, f"environment '{environment}' not found in app '{app}' "
                                f"(environments: {known}); create it with `flash env create "
                                f"{environment} --app {app}`")
        return app, environment

    async def get_environment(request: Request) -> Response:
        return JSONResponse(environment_view(*known_environment(request)))

    async def delete_environment(request: Request) -> Response:
        app, environment = known_environment(request)
        removed = await undeploy(app, environment)
        apps.forget_environment(app, environment)
        return JSONResponse({"deleted": environment, "app": app, "undeployed": removed})

    prefix = "/api/v1/apps"
    return [
        Route(prefix, answering(list_apps)),
        Route(prefix, answering(create_app), methods=["POST"]),
        Route(prefix + "/{app}", answering(get_app)),
        Route(prefix + "/{app}", answering(delete_app), methods=["DELETE"]),
        Route(prefix + "/{app}/environments", answering(list_environments)),
        Route(prefix + "/{app}/environments", answering(create_environment), methods=["POST"]),
        Route(prefix + "/{app}/environments/{environment}", answering(get_environment)),
        Route(prefix + "/{app}/environments/{environment}", answering(delete_environment),
              methods=["DELETE"]),
    ]
