"""The Runpod-compatible queue API under `/v2/{endpoint_id}/`: clients and workers.

Clients: run, runsync, status, stream, cancel, retry, purge-queue, health. Workers pull
with job-take (long poll), report with job-done and job-stream, heartbeat with ping and
learn about cancelled jobs with job-stop, the way Runpod workers do, so the official
`runpod` client and `runpod.serverless.start` workers work against this platform unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash.platform.jobs import FINAL, Job, JobError, JobQueue
from runpod_flash.platform.supervisor import Supervisor

RUN_LIMIT = 10 * 1024 * 1024
RUNSYNC_LIMIT = 20 * 1024 * 1024
DEFAULT_WAIT_MS = 90_000
TAKE_WAIT_S = 20.0
Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _supplied_key(request: Request) -> bytes:
    """Accepts `Bearer <key>` and the raw key (Runpod sends both forms)."""
    value = request.headers.get("authorization", "")
    return value[7:].encode() if value.lower().startswith("bearer ") else value.encode()


def build_queue_routes(
    supervisor: Supervisor, jobs: JobQueue, token: str, api_key: str | None
) -> list[Route]:
    platform_key = token.encode()
    client_keys = [platform_key] + ([api_key.encode()] if api_key else [])

    def known(key: bytes, accepted: list[bytes]) -> bool:
        return any(hmac.compare_digest(key, candidate) for candidate in accepted)

    def client(handler: Callable[[Request, str], Awaitable[Response]]) -> Handler:
        """Live endpoints run shipped code: platform token only. Deployed: the API key."""
        async def guarded(request: Request) -> Response:
            endpoint_id = request.path_params["endpoint_id"]
            endpoint = supervisor.endpoints.get(endpoint_id)
            if endpoint is None or endpoint.spec.get("type") != "QB":
                return _error(404, f"queue endpoint '{endpoint_id}' not found")
            key = _supplied_key(request)
            if endpoint.kind == "live" and not known(key, [platform_key]):
                return _error(401, "live endpoints need the platform token")
            if endpoint.kind != "live" and api_key and not known(key, client_keys):
                return _error(401, "missing or invalid API key (Authorization: Bearer <key>)")
            return await handler(request, endpoint_id)

        return guarded

    def worker(handler: Callable[[Request, str, str], Awaitable[Response]]) -> Handler:
        async def guarded(request: Request) -> Response:
            if not known(_supplied_key(request), [platform_key]):
                return _error(401, "workers must send the platform token")
            endpoint_id = request.path_params["endpoint_id"]
            worker_id = request.path_params["worker_id"]
            supervisor.worker_seen(worker_id)
            return await handler(request, endpoint_id, worker_id)

        return guarded

    async def job_body(request: Request, limit: int) -> dict[str, Any]:
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit:
            raise OverflowError
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise OverflowError
        try:
            return json.loads(data)
        except ValueError as exc:
            raise JobError(f"request body is not valid JSON: {exc}") from None

    async def submit(request: Request, endpoint_id: str, limit: int, sync: bool) -> Job | Response:
        try:
            body = await job_body(request, limit)
            return jobs.submit(endpoint_id, body, sync=sync)
        except OverflowError:
            return _error(413, f"request body over {limit // (1024 * 1024)} MB "
                          f"(the limit of /{'runsync' if sync else 'run'})")
        except JobError as exc:
            return _error(400, str(exc))

    async def run(request: Request, endpoint_id: str) -> Response:
        job = await submit(request, endpoint_id, RUN_LIMIT, sync=False)
        if isinstance(job, Response):
            return job
        return JSONResponse({"id": job.id, "status": "IN_QUEUE"})  # it may already be running

    async def runsync(request: Request, endpoint_id: str) -> Response:
        try:
            wait_ms = int(request.query_params.get("wait", DEFAULT_WAIT_MS))
        except ValueError:
            return _error(400, "wait must be milliseconds (1000-300000)")
        job = await submit(request, endpoint_id, RUNSYNC_LIMIT, sync=True)
        if isinstance(job, Response):
            return job
        try:
            await asyncio.wait_for(job.done.wait(), min(max(wait_ms, 1000), 300_000) / 1000)
        except asyncio.TimeoutError:
            return JSONResponse({"id": job.id, "status": job.status})
        return JSONResponse(job.view())

    def find(endpoint_id: str, request: Request) -> Job | None:
        try:
            return jobs.get(endpoint_id, request.path_params["job_id"])
        except KeyError:
            return None

    async def status(request: Request, endpoint_id: str) -> Response:
        job = find(endpoint_id, request)
        if job is None:
            return _error(404, f"job '{request.path_params['job_id']}' not found (expired?)")
        return JSONResponse(job.view())

    async def stream(request: Request, endpoint_id: str) -> Response:
        job = find(endpoint_id, request)
        if job is None:
            return _error(404, f"job '{request.path_params['job_id']}' not found")
        if job.status not in FINAL and job.streamed == len(job.stream):
            waited = asyncio.ensure_future(job.done.wait())
            await asyncio.wait([waited], timeout=0.5)  # a little long-poll for chunks
            waited.cancel()
        return JSONResponse({"id": job.id, "status": job.status,
                             "stream": jobs.take_stream(job)})

    async def cancel(request: Request, endpoint_id: str) -> Response:
        job = find(endpoint_id, request)
        if job is None:
            return _error(404, f"job '{request.path_params['job_id']}' not found")
        jobs.cancel(job)
        return JSONResponse({"id": job.id, "status": job.status})

    async def retry(request: Request, endpoint_id: str) -> Response:
        job = find(endpoint_id, request)
        if job is None:
            return _error(404, f"job '{request.path_params['job_id']}' not found")
        try:
            jobs.retry(job)
        except JobError as exc:
            return _error(400, str(exc))
        return JSONResponse({"id": job.id, "status": "IN_QUEUE"})

    async def purge(request: Request, endpoint_id: str) -> Response:
        return JSONResponse({"removed": jobs.purge(endpoint_id), "status": "completed"})

    async def health(request: Request, endpoint_id: str) -> Response:
        return JSONResponse({"jobs": jobs.health(endpoint_id),
                             "workers": supervisor.worker_counts(endpoint_id)})

    async def job_take(request: Request, endpoint_id: str, worker_id: str) -> Response:
        batch = request.url.path.split("/")[3] == "job-take-batch"
        try:
            count = max(1, int(request.query_params.get("batch_size", 1))) if batch else 1
        except ValueError:
            return _error(400, "batch_size must be an integer")
        taken = await jobs.take(endpoint_id, worker_id, count, TAKE_WAIT_S)
        if not taken:
            return Response(status_code=204)
        payloads = [{"id": job.id, "input": job.input, **({"webhook": job.webhook}
                                                         if job.webhook else {})}
                    for job in taken]
        return JSONResponse(payloads if batch else payloads[0])

    async def job_done(request: Request, endpoint_id: str, worker_id: str) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "job-done body must be JSON")
        accepted = jobs.complete(endpoint_id, worker_id, request.path_params["job_id"], body)
        if not accepted:
            return _error(409, "this worker does not hold that job (finished, cancelled, "
                               "timed out or requeued)")
        return JSONResponse({"ok": True})

    async def job_stream(request: Request, endpoint_id: str, worker_id: str) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "job-stream body must be JSON")
        if not jobs.add_stream(endpoint_id, worker_id, request.path_params["job_id"], body):
            return _error(409, "this worker does not hold that job")
        return JSONResponse({"ok": True})

    async def ping(request: Request, endpoint_id: str, worker_id: str) -> Response:
        ids = [i for i in request.query_params.get("job_id", "").split(",") if i]
        jobs.heartbeat(worker_id, ids)
        return JSONResponse({"ok": True})

    async def job_stop(request: Request, endpoint_id: str, worker_id: str) -> Response:
        stops = await jobs.stops_for(endpoint_id, worker_id, TAKE_WAIT_S)
        if not stops:
            return Response(status_code=204)
        return JSONResponse({"jobsToStop": stops})

    prefix = "/v2/{endpoint_id}"
    return [
        Route(prefix + "/run", client(run), methods=["POST"]),
        Route(prefix + "/runsync", client(runsync), methods=["POST"]),
        Route(prefix + "/status/{job_id}", client(status), methods=["GET", "POST"]),
        Route(prefix + "/stream/{job_id}", client(stream), methods=["GET", "POST"]),
        Route(prefix + "/cancel/{job_id}", client(cancel), methods=["POST"]),
        Route(prefix + "/retry/{job_id}", client(retry), methods=["POST"]),
        Route(prefix + "/purge-queue", client(purge), methods=["POST"]),
        Route(prefix + "/health", client(health), methods=["GET"]),
        Route(prefix + "/job-take/{worker_id}", worker(job_take), methods=["GET"]),
        Route(prefix + "/job-take-batch/{worker_id}", worker(job_take), methods=["GET"]),
        Route(prefix + "/job-done/{worker_id}/{job_id}", worker(job_done), methods=["POST"]),
        Route(prefix + "/job-stream/{worker_id}/{job_id}", worker(job_stream),
              methods=["POST"]),
        Route(prefix + "/ping/{worker_id}", worker(ping), methods=["GET"]),
        Route(prefix + "/job-stop/{worker_id}", worker(job_stop), methods=["GET"]),
    ]
