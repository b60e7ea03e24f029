"""The control API: endpoints, volumes, status, shutdown, worker registration (all
token-protected)."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash import __version__, config
from runpod_flash.dependencies import APPROVED_KEY
from runpod_flash.platform import artifacts
from runpod_flash.platform.apps import AppError
from runpod_flash.platform.deployments import Deployments, endpoint_specs
from runpod_flash.platform.supervisor import Supervisor
from runpod_flash.platform.volumes import VolumeRefused, users_by_volume

Handler = Callable[[Request], Awaitable[Response]]
_REQUIRED_SPEC_FIELDS = ("name", "type", "workersMin", "workersMax", "idleTimeout")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def token_guard(token: str) -> Callable[[Handler], Handler]:
    """Wraps a handler so that only holders of the platform token reach it."""
    expected = f"Bearer {token}".encode()

    def protected(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            supplied = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(supplied, expected):
                return _error(401, "missing or invalid platform token (Authorization: Bearer)")
            return await handler(request)

        return guarded

    return protected


def build_routes(
    supervisor: Supervisor,
    deployments: Deployments,
    token: str,
    request_shutdown: Callable[[], None],
) -> list[Route]:
    started = time.time()
    protected = token_guard(token)

    async def json_body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError as exc:
            raise ValueError(f"request body is not valid JSON: {exc}") from None

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def status(request: Request) -> Response:
        return JSONResponse({
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - started, 1),
            "gpus": supervisor.gpus.gpus,
            "endpoints": supervisor.status(),
        })

    async def create_live_endpoint(request: Request) -> Response:
        try:
            spec = await json_body(request)
        except ValueError as exc:
            return _error(400, str(exc))
        if not isinstance(spec, dict):
            return _error(422, "endpoint spec must be a JSON object")
        missing = [name for name in _REQUIRED_SPEC_FIELDS if name not in spec]
        if missing:
            return _error(422, f"endpoint spec is missing {', '.join(missing)}")
        endpoint = await supervisor.ensure_live_endpoint(spec)
        return JSONResponse(endpoint.summary())

    async def get_endpoint(request: Request) -> Response:
        endpoint = supervisor.endpoints.get(request.path_params["endpoint_id"])
        if endpoint is None:
            return _error(404, f"Endpoint '{request.path_params['endpoint_id']}' not found")
        return JSONResponse(endpoint.summary())

    async def delete_endpoint(request: Request) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        if not await supervisor.remove_endpoint(endpoint_id):
            return _error(404, f"Endpoint '{endpoint_id}' not found")
        return JSONResponse({"deleted": endpoint_id})

    async def upload_artifact(request: Request) -> Response:
        try:
            path = await artifacts.store(request.path_params["sha256"], request.stream())
        except artifacts.ArtifactRejected as exc:
            return _error(400, str(exc))
        return JSONResponse({"sha256": request.path_params["sha256"], "app_dir": str(path)})

    def deployment_specs(body: Any, manifest: dict[str, Any], create: bool
                         ) -> tuple[list[dict[str, Any]], list[str]]:
        """The specs a deployment request names, in the app and environment it goes to
        (chosen, and created on first use unless previewing, as the original does)."""
        app = body.get("app") or manifest.get("project_name")
        environment = deployments.apps.choose_environment(
            str(app), body.get("environment"), create=create)
        return endpoint_specs(
            manifest, str(body["artifact"]), str(body["python"]), body.get("resources"),
            body.get(APPROVED_KEY), app=str(app), environment=environment,
        )

    async def create_deployment(request: Request) -> Response:
        try:
            body = await json_body(request)
            manifest = artifacts.manifest(str(body["artifact"]))
            specs, skipped = deployment_specs(body, manifest, create=True)
        except AppError as exc:
            return _error(exc.status, str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"invalid deployment request: {exc}")
        return JSONResponse(deployments.start(specs, skipped).summary(), status_code=202)

    async def preview_deployment(request: Request) -> Response:
        """What a deployment of this build would change; the build's manifest comes in the
        body, so nothing is uploaded, created or started."""
        try:
            body = await json_body(request)
            if not isinstance(body.get("manifest"), dict):
                raise ValueError("the body needs the build's 'manifest'")
            specs, _ = deployment_specs(body, body["manifest"], create=False)
        except AppError as exc:
            return _error(exc.status, str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, f"invalid deployment preview: {exc}")
        spec = specs[0] if specs else {}
        return JSONResponse({"app": spec.get("app"), "environment": spec.get("environment"),
                             "changes": deployments.preview(specs)})

    async def get_deployment(request: Request) -> Response:
        deployment = deployments.get(request.path_params["deployment_id"])
        if deployment is None:
            return _error(404, f"deployment '{request.path_params['deployment_id']}' not found")
        return JSONResponse(deployment.summary())

    async def endpoint_logs(request: Request) -> Response:
        """Worker log text after the given per-file offsets (all of it, capped, without);
        `worker` keeps one worker's log."""
        endpoint_id = request.path_params["endpoint_id"]
        folder = config.logs_dir() / endpoint_id
        if endpoint_id not in supervisor.endpoints and not folder.is_dir():
            return _error(404, f"Endpoint '{endpoint_id}' not found")
        try:
            offsets = json.loads(request.query_params.get("cursor") or "{}")
            tail = int(request.query_params.get("tail", "200"))
        except ValueError:
            return _error(400, "cursor must be JSON from a previous answer; tail an integer")
        files = sorted(folder.glob("*.log"), key=lambda path: path.stat().st_mtime)
        worker = request.query_params.get("worker")
        if worker:
            known = [path.stem for path in files]
            if worker not in known:
                return _error(404, f"Endpoint '{endpoint_id}' has no log of worker '{worker}'; "
                                   f"its workers' logs: {', '.join(known) or 'none yet'}")
            files = [path for path in files if path.stem == worker]
        chunks, cursor = [], {}
        for path in files:
            start = int(offsets.get(path.name, 0))
            with open(path, "rb") as handle:
                handle.seek(start)
                data = handle.read()
            cursor[path.name] = start + len(data)
            lines = data.decode(errors="replace").splitlines()
            chunks.extend(f"[{path.stem}] {line}" for line in lines)
        return JSONResponse({"lines": chunks if offsets else chunks[-tail:], "cursor": cursor})

    def volume_users() -> dict[str, list[str]]:
        return users_by_volume((e.name, e.spec) for e in supervisor.endpoints.values())

    async def list_volumes(request: Request) -> Response:
        volumes = await asyncio.to_thread(supervisor.volumes.list, volume_users())
        return JSONResponse({"root": str(supervisor.volumes.root), "volumes": volumes})

    async def create_volume(request: Request) -> Response:
        try:
            body = await json_body(request)
            if not isinstance(body, dict) or not body.get("name"):
                return _error(422, "volume request needs a JSON body with a 'name'")
            path, created = supervisor.volumes.create(str(body["name"]), body.get("size"))
        except ValueError as exc:
            return _error(400, str(exc))
        except VolumeRefused as exc:
            return _error(exc.status, str(exc))
        return JSONResponse({"name": path.name, "path": str(path), "created": created},
                            status_code=201 if created else 200)

    async def delete_volume(request: Request) -> Response:
        force = request.query_params.get("force", "") in ("1", "true", "yes")
        try:
            name = request.path_params["name"]
            users = volume_users().get(supervisor.volumes.path(name).name, [])
            path = await asyncio.to_thread(supervisor.volumes.delete, name, users, force)
        except VolumeRefused as exc:
            return _error(exc.status, str(exc))
        return JSONResponse({"deleted": path.name, "path": str(path)})

    async def shutdown(request: Request) -> Response:
        request_shutdown()
        return JSONResponse({"status": "stopping"})

    async def worker_ready(request: Request) -> Response:
        try:
            port = int((await json_body(request))["port"])
        except (ValueError, KeyError, TypeError):
            return _error(422, "worker ready report needs a JSON body with an integer 'port'")
        if not supervisor.mark_ready(request.path_params["worker_id"], port):
            return _error(404, "unknown worker or worker not starting")
        return JSONResponse({"ok": True})

    return [
        Route("/health", health),
        Route("/api/v1/status", protected(status)),
        Route("/api/v1/endpoints/live", protected(create_live_endpoint), methods=["POST"]),
        Route("/api/v1/endpoints/{endpoint_id}", protected(get_endpoint)),
        Route("/api/v1/endpoints/{endpoint_id}", protected(delete_endpoint), methods=["DELETE"]),
        Route("/api/v1/endpoints/{endpoint_id}/logs", protected(endpoint_logs)),
        Route("/api/v1/artifacts/{sha256}", protected(upload_artifact), methods=["PUT"]),
        Route("/api/v1/deployments", protected(create_deployment), methods=["POST"]),
        Route("/api/v1/deployments/preview", protected(preview_deployment), methods=["POST"]),
        Route("/api/v1/deployments/{deployment_id}", protected(get_deployment)),
        Route("/api/v1/volumes", protected(list_volumes)),
        Route("/api/v1/volumes", protected(create_volume), methods=["POST"]),
        Route("/api/v1/volumes/{name}", protected(delete_volume), methods=["DELETE"]),
        Route("/api/v1/shutdown", protected(shutdown), methods=["POST"]),
        Route("/internal/workers/{worker_id}/ready", protected(worker_ready), methods=["POST"]),
    ]
