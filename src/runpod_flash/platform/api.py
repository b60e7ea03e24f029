"""The control API: endpoints, volumes, status, shutdown, worker registration (all
token-protected)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash import __version__, config, strict_json
from runpod_flash.dependencies import APPROVED_KEY
from runpod_flash.platform import artifacts
from runpod_flash.platform.apps import AppError
from runpod_flash.platform.credentials import Credentials, Grant, bearer
from runpod_flash.platform.deployments import Deployments, endpoint_specs
from runpod_flash.platform.supervisor import Supervisor
from runpod_flash.platform.versions_api import build_version_routes
from runpod_flash.platform.volumes import VolumeRefused, users_by_volume

Handler = Callable[[Request], Awaitable[Response]]
_REQUIRED_SPEC_FIELDS = ("name", "type", "workersMin", "workersMax", "idleTimeout")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _count(text: str) -> int:
    """A non-negative integer query parameter (`int()` alone would take `-5` and `1_0`)."""
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"tail={text[:20]!r} is not a number of lines")
    return int(text)


def _modified(paths: Iterable[Path]) -> list[tuple[float, Path]]:
    """(mtime, path) of the files that still exist: log retention may prune any of them."""
    found = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            found.append((path.stat().st_mtime, path))
    return found


def _log_cursor(text: str) -> dict[str, int]:
    """`flash logs`' cursor: {log file name: byte offset already read}."""
    try:
        cursor = strict_json.loads(text)
    except strict_json.InvalidJSON as exc:
        raise ValueError(f"cursor is not valid JSON: {exc}") from None
    if not isinstance(cursor, dict) or not all(
            type(offset) is int and 0 <= offset < 2**63 for offset in cursor.values()):
        raise ValueError("cursor must be a JSON object of log file name -> byte offset "
                         "(an integer, 0 or more)")
    return cursor


GrantCheck = Callable[[Grant, Request], bool]


def token_guard(
    token: str, credentials: Credentials | None = None
) -> Callable[..., Handler]:
    """Wraps a handler so that only holders of the platform token reach it, or a worker
    whose grant `allow` admits (a worker's token is refused everywhere else)."""
    expected = f"Bearer {token}".encode()

    def protected(handler: Handler, allow: GrantCheck | None = None) -> Handler:
        async def guarded(request: Request) -> Response:
            supplied = request.headers.get("authorization", "")
            if hmac.compare_digest(supplied.encode(), expected):
                return await handler(request)
            grant = credentials.for_token(bearer(supplied)) if credentials else None
            if grant is not None and allow is not None and allow(grant, request):
                return await handler(request)
            if grant is not None:
                return _error(403, "a worker's token does not allow this; it reports its own "
                                   "worker, takes its endpoint's jobs and calls the endpoints "
                                   "its code may call")
            return _error(401, "missing or invalid platform token (Authorization: Bearer)")

        return guarded

    return protected


def _own_worker(grant: Grant, request: Request) -> bool:
    return grant.worker_id == request.path_params.get("worker_id")


def _provisions_live(grant: Grant, request: Request) -> bool:
    """A live worker's code calls other live resources, provisioning them as scripts do."""
    return grant.live


def _reads_callable(supervisor: Supervisor) -> GrantCheck:
    def check(grant: Grant, request: Request) -> bool:
        endpoint = supervisor.endpoints.get(request.path_params.get("endpoint_id", ""))
        return endpoint is not None and grant.may_call(endpoint.id, endpoint.kind == "live")

    return check


def build_routes(
    supervisor: Supervisor,
    deployments: Deployments,
    token: str,
    request_shutdown: Callable[[], None],
) -> list[Route]:
    started = time.time()
    protected = token_guard(token, supervisor.credentials)

    async def json_body(request: Request) -> dict[str, Any]:
        """The body's JSON object; a ValueError naming the problem otherwise."""
        try:
            body = strict_json.loads(await request.body())
        except strict_json.InvalidJSON as exc:
            raise ValueError(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError(f"request body must be a JSON object, not {_json_type(body)}")
        return body

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def status(request: Request) -> Response:
        return JSONResponse({
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - started, 1),
            "gpus": supervisor.provider.gpus(),
            "provider": supervisor.provider.describe(),
            "endpoints": supervisor.status(),
        })

    async def create_live_endpoint(request: Request) -> Response:
        try:
            spec = await json_body(request)
        except ValueError as exc:
            return _error(400, str(exc))
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

    async def endpoint_gateway_secret(request: Request) -> Response:
        """For tools that hold the platform token and call workers directly (benchmarks
        behind nginx): the header a worker of this endpoint requires."""
        endpoint_id = request.path_params["endpoint_id"]
        if endpoint_id not in supervisor.endpoints:
            return _error(404, f"Endpoint '{endpoint_id}' not found")
        return JSONResponse({"header": config.GATEWAY_SECRET_HEADER,
                             "value": supervisor.credentials.gateway_secret(endpoint_id)})

    async def delete_endpoint(request: Request) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        if not await supervisor.remove_endpoint(endpoint_id):
            return _error(404, f"Endpoint '{endpoint_id}' not found")
        return JSONResponse({"deleted": endpoint_id})

    async def delete_live_endpoints(request: Request) -> Response:
        return JSONResponse({"deleted": await supervisor.remove_live_endpoints()})

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
        if endpoint_id not in supervisor.endpoints and (
                endpoint_id.startswith(".") or not folder.is_dir()):  # `..` is no endpoint
            return _error(404, f"Endpoint '{endpoint_id}' not found")
        try:
            offsets = _log_cursor(request.query_params.get("cursor") or "{}")
            tail = _count(request.query_params.get("tail", "200"))
        except ValueError as exc:
            return _error(400, f"{exc}; pass the cursor of a previous answer and a tail of "
                               "0 or more lines")
        files = [path for _, path in sorted(_modified(folder.glob("*.log")))]
        worker = request.query_params.get("worker")
        if worker:
            known = [path.stem for path in files]
            if worker not in known:
                return _error(404, f"Endpoint '{endpoint_id}' has no log of worker '{worker}'; "
                                   f"its workers' logs: {', '.join(known) or 'none yet'}")
            files = [path for path in files if path.stem == worker]
        chunks, cursor = [], {}
        for path in files:
            start = offsets.get(path.name, 0)
            try:
                with open(path, "rb") as handle:
                    if handle.seek(0, 2) < start:  # truncated by log rotation: from the top
                        start = 0
                    handle.seek(start)
                    data = handle.read()
            except FileNotFoundError:  # pruned (log retention) since it was listed
                continue
            cursor[path.name] = start + len(data)
            lines = data.decode(errors="replace").splitlines()
            chunks.extend(f"[{path.stem}] {line}" for line in lines)
        return JSONResponse({"lines": chunks if offsets else chunks[max(0, len(chunks) - tail):],
                             "cursor": cursor})

    def volume_users() -> dict[str, list[str]]:
        return users_by_volume((e.name, e.spec) for e in supervisor.endpoints.values())

    async def list_volumes(request: Request) -> Response:
        volumes = await asyncio.to_thread(supervisor.volumes.list, volume_users())
        return JSONResponse({"root": str(supervisor.volumes.root), "volumes": volumes})

    async def create_volume(request: Request) -> Response:
        try:
            body = await json_body(request)
            if not body.get("name"):
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
        if not supervisor.health.mark_ready(request.path_params["worker_id"], port):
            return _error(404, "unknown worker or worker not starting")
        return JSONResponse({"ok": True})

    return [
        Route("/health", health),
        Route("/api/v1/status", protected(status)),
        Route("/api/v1/endpoints/live", protected(create_live_endpoint, _provisions_live),
              methods=["POST"]),
        Route("/api/v1/endpoints/live", protected(delete_live_endpoints), methods=["DELETE"]),
        Route("/api/v1/endpoints/{endpoint_id}",
              protected(get_endpoint, _reads_callable(supervisor))),
        Route("/api/v1/endpoints/{endpoint_id}", protected(delete_endpoint), methods=["DELETE"]),
        Route("/api/v1/endpoints/{endpoint_id}/logs", protected(endpoint_logs)),
        Route("/api/v1/endpoints/{endpoint_id}/gateway-secret",
              protected(endpoint_gateway_secret)),
        Route("/api/v1/artifacts/{sha256}", protected(upload_artifact), methods=["PUT"]),
        Route("/api/v1/deployments", protected(create_deployment), methods=["POST"]),
        Route("/api/v1/deployments/preview", protected(preview_deployment), methods=["POST"]),
        Route("/api/v1/deployments/{deployment_id}", protected(get_deployment)),
        Route("/api/v1/volumes", protected(list_volumes)),
        Route("/api/v1/volumes", protected(create_volume), methods=["POST"]),
        Route("/api/v1/volumes/{name}", protected(delete_volume), methods=["DELETE"]),
        Route("/api/v1/shutdown", protected(shutdown), methods=["POST"]),
        Route("/internal/workers/{worker_id}/ready", protected(worker_ready, _own_worker),
              methods=["POST"]),
        *build_version_routes(deployments, protected),
    ]
