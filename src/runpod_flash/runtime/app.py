"""The live worker's ASGI app: `/ping` and the token-protected `/execute`."""

from __future__ import annotations

import hmac
import json
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runpod_flash.runtime.executor import CallRequest, FunctionNotLoaded, FunctionStore, execute

logger = logging.getLogger("runpod_flash.runtime")

MAX_EXECUTE_BODY = 64 * 1024 * 1024


class _State:
    """Readiness flag flipped once the worker can serve (`/ping` says 204 until then)."""

    ready = False


def _authorized(request: Request, token: str) -> bool:
    supplied = request.headers.get("authorization", "")
    return hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode())


def create_live_app(token: str) -> Starlette:
    """A worker that runs functions shipped by `@remote` callers holding the platform token."""
    store = FunctionStore()
    state = _State()

    async def ping(request: Request) -> Response:
        if not state.ready:
            return Response(status_code=204)
        return JSONResponse({"status": "healthy"})

    async def execute_endpoint(request: Request) -> Response:
        if not _authorized(request, token):
            return JSONResponse({"error": "missing or invalid platform token"}, status_code=401)
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_EXECUTE_BODY:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            call = CallRequest.from_json(json.loads(await request.body()))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            body = await execute(store, call)
        except FunctionNotLoaded:
            return JSONResponse(
                {"error": "function not loaded", "code": "function_not_loaded"}, status_code=409
            )
        except Exception as exc:  # unpickling the function itself failed
            logger.exception("cannot load function %s", call.function_name)
            return JSONResponse(
                {"error": f"Cannot load function '{call.function_name}': {exc}"}, status_code=400
            )
        return Response(json.dumps(body), media_type="application/json")

    app = Starlette(
        routes=[Route("/ping", ping), Route("/execute", execute_endpoint, methods=["POST"])]
    )
    app.state.worker = state
    return app
