"""The Runpod-compatible queue API under `/v2/{endpoint_id}/`: clients and workers.

Clients: run, runsync, status, stream, cancel, retry, purge-queue, health. Workers pull
with job-take (long poll), report with job-done and job-stream, heartbeat with ping and
learn about cancelled jobs with job-stop, the way Runpod workers do, so the official
`runpod` client and `runpod.serverless.start` workers work against this platform unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash import config, strict_json
from runpod_flash.asgi import ClientDisconnected, read_body
from runpod_flash.platform.jobs import FINAL, Job, JobError, JobQueue
from runpod_flash.platform.supervisor import Supervisor

DEFAULT_WAIT_MS = 90_000
TAKE_WAIT_S = 20.0
Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json_content(request: Request) -> bool:
    """Whether the body is declared JSON. Submissions must say so: a web page can send
    `text/plain` (or no type) cross-origin without asking, but not `application/json`."""
    media_type = request.headers.get("content-type", "").partition(";")[0]
    return media_type.strip().lower() == "application/json"


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

    def _calls(key: bytes, endpoint_id: str, live: bool) -> bool:
        """A worker's token, for an endpoint its code may call."""
        grant = supervisor.credentials.for_token(key.decode("latin-1"))
        return grant is not None and grant.may_call(endpoint_id, live)

    def client(handler: Callable[[Request, str], Awaitable[Response]]) -> Handler:
        """Live endpoints run shipped code: platform token only. Deployed: the API key."""
        async def guarded(request: Request) -> Response:
            endpoint_id = request.path_params["endpoint_id"]
            endpoint = supervisor.endpoints.get(endpoint_id)
            if endpoint is None or endpoint.spec.get("type") != "QB":
                return _error(404, f"queue endpoint '{endpoint_id}' not found")
            key = _supplied_key(request)
            live = endpoint.kind == "live"
            needed = [platform_key] if live else client_keys if api_key else None
            if needed is not None and not known(key, needed) and not _calls(key, endpoint_id,
                                                                            live):
                return _error(401, "live endpoints need the platform token" if live else
                              "missing or invalid API key (Authorization: Bearer <key>)")
            return await handler(request, endpoint_id)

        return guarded

    def worker(handler: Callable[[Request, str, str], Awaitable[Response]]) -> Handler:
        async def guarded(request: Request) -> Response:
            endpoint_id = request.path_params["endpoint_id"]
            worker_id = request.path_params["worker_id"]
            key = _supplied_key(request)
            grant = supervisor.credentials.for_token(key.decode("latin-1"))
            own = grant is not None and (grant.worker_id, grant.endpoint_id) == (
                worker_id, endpoint_id)
            if not own and not known(key, [platform_key]):
                return _error(401, "a worker pulls only its own endpoint's jobs, with the "
                                   "token its platform gave it (RUNPOD_AI_API_KEY)")
            supervisor.presence.worker_seen(worker_id)
            return await handler(request, endpoint_id, worker_id)

        return guarded

    limits = {sync: config.queue_input_limit(sync) for sync in (False, True)}

    async def submit(request: Request, endpoint_id: str, sync: bool) -> Job | Response:
        """The job a `/run` or `/runsync` body describes, or the 4xx that refuses it. The
        size limit holds before parsing, and no more than it is ever read."""
        route, limit = ("/runsync" if sync else "/run"), limits[sync]
        if not _json_content(request):
            return _error(415, f"{route} takes a JSON body; send the header "
                               "'Content-Type: application/json'")
        declared = request.headers.get("content-length", "")
        try:
            data = None if declared.isdigit() and int(declared) > limit else \
                await read_body(request.receive, limit)
        except ClientDisconnected:
            return _error(400, "the request body ended early (client disconnected)")
        if data is None:
            return _error(413, f"request body over {limit / config.MIB:g} MB, the limit of "
                               f"{route}; pass large inputs by reference (a URL or a volume "
                               f"path) or raise {config.queue_input_setting(sync)}")
        try:
            return jobs.submit(endpoint_id, strict_json.loads(data), sync=sync)
        except strict_json.InvalidJSON as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        except JobError as exc:  # a QueueFull carries its own status (429)
            return _error(getattr(exc, "status", 400), str(exc))

    async def run(request: Request, endpoint_id: str) -> Response:
        job = await submit(request, endpoint_id, sync=False)
        if isinstance(job, Response):
            return job
        return JSONResponse({"id": job.id, "status": "IN_QUEUE"})  # it may already be running

    async def runsync(request: Request, endpoint_id: str) -> Response:
        try:
            wait_ms = int(request.query_params.get("wait", DEFAULT_WAIT_MS))
        except ValueError:
            return _error(400, "wait must be milliseconds (1000-300000)")
        job = await submit(request, endpoint_id, sync=True)
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
                             "workers": supervisor.presence.worker_counts(endpoint_id)})

    async def job_take(request: Request, endpoint_id: str, worker_id: str) -> Response:
        batch = request.url.path.split("/")[3] == "job-take-batch"
        try:
            count = max(1, int(request.query_params.get("batch_size", 1))) if batch else 1
        except ValueError:
            return _error(400, "batch_size must be an integer")
        taken = await jobs.take(endpoint_id, worker_id, count, TAKE_WAIT_S)
        payloads = []
        for job in taken:
            try:
                payloads.append(strict_json.dumps({"id": job.id, "input": job.input, **(
                    {"webhook": job.webhook} if job.webhook else {})}))
            except strict_json.InvalidJSON as exc:  # stored before inputs were checked
                jobs.complete(endpoint_id, worker_id, job.id,
                              {"error": f"the job's input is not valid JSON: {exc}"})
        if not payloads:
            return Response(status_code=204)
        content = b"[" + b",".join(payloads) + b"]" if batch else payloads[0]
        return Response(content, media_type="application/json")

    async def job_done(request: Request, endpoint_id: str, worker_id: str) -> Response:
        job_id = request.path_params["job_id"]
        try:
            body = strict_json.loads(await request.body() or b"{}")
        except strict_json.InvalidJSON as exc:  # fail the job now, not at the next /status
            problem = f"the worker's result is not valid JSON: {exc}"
            jobs.complete(endpoint_id, worker_id, job_id, {"error": problem})
            return _error(400, problem)
        if not jobs.complete(endpoint_id, worker_id, job_id, body):
            return _error(409, "this worker does not hold that job (finished, cancelled, "
                               "timed out or requeued)")
        return JSONResponse({"ok": True})

    async def job_stream(request: Request, endpoint_id: str, worker_id: str) -> Response:
        try:
            body = strict_json.loads(await request.body() or b"{}")
        except strict_json.InvalidJSON as exc:
            return _error(400, f"job-stream body is not valid JSON: {exc}")
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
