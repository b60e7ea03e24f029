"""The dashboard's pages, server-rendered from the platform's own state.

Every page is read from memory (supervisor, job queue, history) except the job lists, which
come from the store through a read-only SQLite connection in a thread, so a page never holds
the event loop that also runs the gateway. Actions (cancel, retry, purge) are forms posted
with the session's CSRF token, and only by sessions signed in with the platform token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from runpod_flash import __version__, config
from runpod_flash.platform.dashboard.auth import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    DashboardAuth,
    Session,
    csrf_ok,
)
from runpod_flash.platform.dashboard.history import History
from runpod_flash.platform.dashboard.logs import read_new_lines
from runpod_flash.platform.environments import directory_size
from runpod_flash.platform.jobs import FINAL, Job, JobError, JobQueue
from runpod_flash.platform.supervisor import Supervisor
from runpod_flash.platform.versions import kept, listing
from runpod_flash.platform.volumes import users_by_volume

PREFIX = "/dashboard"
HERE = Path(__file__).parent
JOB_STATUSES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
PAGE_SIZE = 50
FORM_LIMIT = 16 * 1024
SHOWN_PAYLOAD_CHARS = 64 * 1024
LOG_TAIL_LINES = 100
LOG_POLL_S = 0.5
KEEPALIVE_S = 15.0
DISK_CACHE_S = 60.0  # walking environments of gigabytes takes a while: not on every view
SECURITY_HEADERS = {
    # Nothing is loaded from elsewhere, nothing runs inline, no page frames this one, and
    # a login link never leaves in a Referer to another site (`no-referrer` would make
    # browsers send `Origin: null` with forms, which the front door refuses).
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
}

Handler = Callable[[Request, Session], Awaitable[Response]]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _size(count: float | None) -> str:
    if count is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def _when(stamp: float | None) -> str:
    return "—" if stamp is None else datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
TEMPLATES.env.filters.update(duration=_duration, size=_size, when=_when, number=_number,
                             percent=_percent)


def _rss_bytes(pid: int | None) -> int | None:
    """A process's resident memory (Linux /proc), None where it cannot be read."""
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def _entry_size(path: Path) -> int:
    """Bytes under a directory, or a file's size; 0 for what vanished meanwhile."""
    try:
        return directory_size(path) if path.is_dir() else path.stat().st_size
    except OSError:
        return 0


def _shown(value: Any) -> str:
    """A payload as readable JSON, cut to what a page can show."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    if len(text) > SHOWN_PAYLOAD_CHARS:
        return text[:SHOWN_PAYLOAD_CHARS] + f"\n… ({len(text) - SHOWN_PAYLOAD_CHARS} more " \
                                             "characters not shown)"
    return text


def _local_path(target: str | None) -> str:
    """Where to go after signing in: a dashboard page, never another site."""
    if target and target.startswith(PREFIX) and not target.startswith("//") \
            and "\\" not in target:
        return target
    return PREFIX


class FormTooLarge(ValueError):
    """A dashboard form never needs more than FORM_LIMIT bytes."""


async def _form(request: Request) -> dict[str, str]:
    """An url-encoded form's fields (the last value of each)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise FormTooLarge(f"form over {FORM_LIMIT} bytes")
    return {name: values[-1] for name, values in parse_qs(body.decode(errors="replace")).items()}


class JobsTable:
    """Finished and unfinished jobs as the store keeps them, read through a connection of
    its own (read-only, opened per query in a worker thread): the store's connection and
    its lock stay the job queue's."""

    def __init__(self, path: Path) -> None:
        self._uri = f"{path.as_uri()}?mode=ro"

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            db = sqlite3.connect(self._uri, uri=True, timeout=2)
        except sqlite3.OperationalError:
            return []  # no job was ever stored
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []  # the platform has not made its tables yet
        finally:
            db.close()

    async def counts(self) -> dict[str, Counter[str]]:
        """{endpoint id: jobs by status}."""
        rows = await asyncio.to_thread(
            self._query, "SELECT endpoint_id, status, count(*) FROM jobs "
                         "GROUP BY endpoint_id, status", ())
        found: dict[str, Counter[str]] = {}
        for endpoint_id, status, count in rows:
            found.setdefault(endpoint_id, Counter())[status] = count
        return found

    async def page(self, endpoint_id: str, status: str | None, offset: int
                   ) -> list[dict[str, Any]]:
        """Up to PAGE_SIZE + 1 jobs, newest first (the extra one says there is more)."""
        where, params = "endpoint_id = ?", [endpoint_id]
        if status:
            where += " AND status = ?"
            params.append(status)
        columns = ("id", "status", "attempts", "retried", "worker_id", "created_at",
                   "started_at", "completed_at")
        rows = await asyncio.to_thread(
            self._query, f"SELECT {', '.join(columns)} FROM jobs WHERE {where} "
                         "ORDER BY created_at DESC LIMIT ? OFFSET ?",
            (*params, PAGE_SIZE + 1, offset))
        return [dict(zip(columns, row, strict=True)) for row in rows]


class Views:
    def __init__(self, supervisor: Supervisor, jobs: JobQueue, auth: DashboardAuth,
                 history: History, interval_s: float, state_db: Path) -> None:
        self.supervisor = supervisor
        self.jobs = jobs
        self.auth = auth
        self.history = history
        self.interval_s = interval_s
        self.table = JobsTable(state_db)
        self.started = time.time()
        self.node = socket.gethostname()
        self.provider = supervisor.provider.name
        self._closing = asyncio.Event()
        self._disk: tuple[float, dict[str, Any]] | None = None

    def close(self) -> None:
        """End the log streams: the platform is stopping."""
        self._closing.set()

    def routes(self) -> list[BaseRoute]:
        page, operator = self._signed_in, self._operator
        return [
            Route(PREFIX, page(self.endpoints)),
            Route(PREFIX + "/login", self.login_page),
            Route(PREFIX + "/login", self.login, methods=["POST"]),
            Route(PREFIX + "/logout", self._acting(self.logout, operator=False),
                  methods=["POST"]),
            Route(PREFIX + "/endpoints/{endpoint_id}", page(self.endpoint)),
            Route(PREFIX + "/endpoints/{endpoint_id}/history", page(self.history_json)),
            Route(PREFIX + "/endpoints/{endpoint_id}/logs", operator(self.log_stream)),
            Route(PREFIX + "/queue", page(self.queue)),
            Route(PREFIX + "/queue/{endpoint_id}", page(self.queue_jobs)),
            Route(PREFIX + "/queue/{endpoint_id}/purge", self._acting(self.purge),
                  methods=["POST"]),
            Route(PREFIX + "/queue/{endpoint_id}/jobs/{job_id}", page(self.job)),
            Route(PREFIX + "/queue/{endpoint_id}/jobs/{job_id}/{action:str}",
                  self._acting(self.job_action), methods=["POST"]),
            Route(PREFIX + "/platform", page(self.platform)),
            Mount(PREFIX + "/static", StaticFiles(directory=str(HERE / "static"))),
        ]

    # -- access -----------------------------------------------------------------------------

    def _signed_in(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Pages need a session; a browser without one is sent to the login page."""
        async def guarded(request: Request) -> Response:
            session = self.auth.session(request.cookies.get(SESSION_COOKIE))
            if session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query
                                             else "")
                return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}",
                                        303, SECURITY_HEADERS)
            response = await handler(request, session)
            response.headers.update(SECURITY_HEADERS)
            return response

        return guarded

    def _operator(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Logs, job payloads and actions need a session signed in with the platform token."""
        async def only_operators(request: Request, session: Session) -> Response:
            if not session.operator:
                return PlainTextResponse(
                    "signed in with the API key, which reads the dashboard only; sign out "
                    "and sign in with the platform token (or a `flash dashboard` link) to "
                    "read logs and payloads and to cancel, retry or purge jobs", 403)
            return await handler(request, session)

        return self._signed_in(only_operators)

    def _acting(self, handler: Callable[[Request, Session, dict[str, str]],
                                        Awaitable[Response]],
                operator: bool = True) -> Callable[[Request], Awaitable[Response]]:
        """A form that changes something: the session's CSRF token must come with it."""
        async def checked(request: Request, session: Session) -> Response:
            try:
                form = await _form(request)
            except FormTooLarge as exc:
                return PlainTextResponse(f"{exc}; submit the dashboard's own form", 413)
            if not csrf_ok(session, form.get("csrf")):
                return PlainTextResponse(
                    "this form is stale or did not come from this dashboard (CSRF token "
                    "missing or wrong); reload the page and try again", 403)
            return await handler(request, session, form)

        return (self._operator if operator else self._signed_in)(checked)

    def _render(self, request: Request, session: Session | None, name: str,
                status_code: int = 200, **context: Any) -> Response:
        return TEMPLATES.TemplateResponse(
            request, name, {"session": session, "prefix": PREFIX, **context},
            status_code=status_code, headers=SECURITY_HEADERS)

    def _signed_in_response(self, session: Session, request: Request, target: str
                            ) -> Response:
        response = RedirectResponse(_local_path(target), 303, SECURITY_HEADERS)
        response.set_cookie(SESSION_COOKIE, session.id, max_age=int(SESSION_TTL_S),
                            path=PREFIX, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def login_page(self, request: Request) -> Response:
        """The login form; with `?code=`, a `flash dashboard` link that signs in at once."""
        target = request.query_params.get("next", PREFIX)
        code = request.query_params.get("code")
        if code is None:
            return self._render(request, None, "login.html", target=target)
        session = self.auth.redeem(code)
        if session is None:
            return self._render(
                request, None, "login.html", 401, target=target,
                error="This login link was used already or has expired: links work once, "
                      "within a minute. Run `flash dashboard` again, or sign in below.")
        return self._signed_in_response(session, request, target)

    async def login(self, request: Request) -> Response:
        try:
            form = await _form(request)
        except FormTooLarge as exc:
            return PlainTextResponse(f"{exc}; submit the login form", 413)
        target = form.get("next", PREFIX)
        session = self.auth.sign_in(form.get("secret", ""))
        if session is None:
            return self._render(
                request, None, "login.html", 401, target=target,
                error="That is not this platform's token or API key. The token is in "
                      "$FLASH_HOME/token on the platform's machine (or its "
                      "FLASH_PLATFORM_TOKEN); `flash dashboard` signs in without typing it.")
        return self._signed_in_response(session, request, target)

    async def logout(self, request: Request, session: Session, form: dict[str, str]
                     ) -> Response:
        self.auth.sign_out(session.id)
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    # -- endpoints --------------------------------------------------------------------------

    def _rows(self, request: Request) -> list[dict[str, Any]]:
        """Every endpoint as `flash status --json` shows it, with its worker states, its
        queue and its last sampled traffic."""
        base = str(request.base_url).rstrip("/")
        rows = []
        for summary in self.supervisor.status():
            states = Counter(worker["state"] for worker in summary["workers"])
            queued = summary["stats"].get("queued", summary["waiting"])
            rows.append({**summary, "url": base + summary["path"], "states": states,
                         "queued": queued, "point": self.history.recent(summary["id"])})
        return rows

    async def endpoints(self, request: Request, session: Session) -> Response:
        """The endpoint list, filtered by `q`, `kind`, `type` and `status`; with
        `?rows=1` only the table bodies, for the page's periodic refresh."""
        params = request.query_params
        query = params.get("q", "").strip().lower()
        chosen = {name: params.get(name, "") for name in ("kind", "type", "status")}
        rows = [row for row in self._rows(request)
                if all(not value or str(row[name]) == value for name, value in chosen.items())
                and (not query or any(query in str(row.get(field) or "").lower()
                                      for field in ("name", "id", "app", "environment")))]
        rows.sort(key=lambda row: (row.get("app") or "", row.get("environment") or "",
                                   row["name"]))
        groups = [("deployed", "Deployed", [r for r in rows if r["kind"] == "deployed"]),
                  ("live", "Live", [r for r in rows if r["kind"] != "deployed"])]
        template = "endpoint_rows.html" if params.get("rows") else "endpoints.html"
        return self._render(request, session, template, groups=groups, chosen=chosen,
                            query=params.get("q", ""), total=len(self.supervisor.endpoints),
                            interval_s=self.interval_s, nav="endpoints")

    async def endpoint(self, request: Request, session: Session) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        endpoint = self.supervisor.endpoints.get(endpoint_id)
        if endpoint is None:
            return self._render(request, session, "missing.html", 404, nav="endpoints",
                                what=f"Endpoint '{endpoint_id}'")
        row = next(r for r in self._rows(request) if r["id"] == endpoint_id)
        now = time.monotonic()
        workers = [{**worker.summary(), "uptime_s": now - worker.started_at,
                    # a cluster worker's pid is its node's: its memory is not read here
                    "rss": _rss_bytes(worker.process.pid if worker.process and
                                      worker.node is None else None),
                    "node": worker.node[:8] if worker.node else self.node,
                    "current": worker.version == endpoint.version}
                   for worker in endpoint.workers.values()]
        versions = Counter(worker.version for worker in endpoint.workers.values())
        docs = row["url"] + "/docs" if endpoint.kind == "deployed" and row["type"] != "QB" \
            else None
        history = listing(await asyncio.to_thread(kept, self.supervisor.store, endpoint_id),
                          endpoint.version) if endpoint.kind == "deployed" else []
        return self._render(request, session, "endpoint.html", endpoint=row, workers=workers,
                            versions=versions, history=history, docs=docs,
                            interval_s=self.interval_s, nav="endpoints")

    async def history_json(self, request: Request, session: Session) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        body = {"interval_s": self.interval_s,
                "points": [point.json() for point in self.history.points(endpoint_id)]}
        return Response(json.dumps(body), media_type="application/json")

    async def log_stream(self, request: Request, session: Session) -> Response:
        """Server-sent events: the last lines of the workers' logs, then each new line as
        it is written. Each event's id is the cursor, so a reconnecting browser (it sends
        `Last-Event-ID`) continues where it stopped."""
        endpoint_id = request.path_params["endpoint_id"]
        if endpoint_id not in self.supervisor.endpoints:
            return PlainTextResponse(f"endpoint '{endpoint_id}' not found", 404)
        folder = config.logs_dir() / endpoint_id
        cursor = _cursor(request.headers.get("last-event-id"))

        async def events() -> AsyncIterator[str]:
            nonlocal cursor
            tail: int | None = None if cursor else LOG_TAIL_LINES
            quiet_since = time.monotonic()
            yield f"retry: {int(LOG_POLL_S * 2000)}\n\n"
            while not self._closing.is_set():
                lines, cursor = await asyncio.to_thread(read_new_lines, folder, cursor, tail)
                tail = None
                if lines:
                    data = "".join(f"data: {line}\n" for line in lines)
                    yield f"id: {json.dumps(cursor, separators=(',', ':'))}\n{data}\n"
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > KEEPALIVE_S:
                    yield ": still here\n\n"  # a comment: finds closed connections
                    quiet_since = time.monotonic()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), LOG_POLL_S)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    # -- queue ------------------------------------------------------------------------------

    async def queue(self, request: Request, session: Session) -> Response:
        counts = await self.table.counts()
        queue_ids = [e.id for e in self.supervisor.endpoints.values()
                     if e.spec.get("type") == "QB"]
        rows = [{"id": endpoint_id, "deployed": endpoint_id in self.supervisor.endpoints,
                 "counts": counts.get(endpoint_id, Counter()),
                 "health": self.jobs.health(endpoint_id) if endpoint_id in queue_ids else None}
                for endpoint_id in sorted(set(queue_ids) | set(counts))]
        return self._render(request, session, "queue.html", rows=rows, statuses=JOB_STATUSES,
                            nav="queue")

    async def queue_jobs(self, request: Request, session: Session) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        status = request.query_params.get("status") or None
        if status is not None and status not in JOB_STATUSES:
            status = None
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            offset = 0
        jobs = await self.table.page(endpoint_id, status, offset)
        for row in jobs:  # unfinished jobs: memory is ahead of the store
            held = self.jobs.jobs.get(row["id"])
            if held is not None:
                row.update(status=held.status, attempts=held.attempts,
                           worker_id=held.worker_id, started_at=held.started_at,
                           completed_at=held.completed_at)
        endpoint = self.supervisor.endpoints.get(endpoint_id)
        return self._render(
            request, session, "queue_jobs.html", endpoint_id=endpoint_id,
            live=endpoint is not None and endpoint.spec.get("type") == "QB",
            jobs=jobs[:PAGE_SIZE], more=len(jobs) > PAGE_SIZE, offset=offset,
            page_size=PAGE_SIZE, status=status, statuses=JOB_STATUSES,
            waiting=self.jobs.load(endpoint_id).waiting if endpoint is not None else 0,
            done=request.query_params.get("done"), nav="queue")

    def _job(self, request: Request) -> Job | None:
        try:
            return self.jobs.get(request.path_params["endpoint_id"],
                                 request.path_params["job_id"])
        except KeyError:
            return None

    async def job(self, request: Request, session: Session, error: str | None = None
                  ) -> Response:
        job = self._job(request)
        if job is None:
            return self._render(request, session, "missing.html", 404, nav="queue",
                                what=f"Job '{request.path_params['job_id']}'")
        payload: str | None = None
        if session.operator:
            try:
                payload = _shown(await asyncio.to_thread(lambda: job.input))
            except KeyError:
                payload = "(no longer kept)"
        view = job.view()
        endpoint = self.supervisor.endpoints.get(job.endpoint_id)
        return self._render(
            request, session, "job.html", 409 if error else 200, job=job, view=view,
            input=payload, output=_shown(job.output) if job.output is not None else None,
            actionable=endpoint is not None and endpoint.spec.get("type") == "QB",
            final=job.status in FINAL, error=error, done=request.query_params.get("done"),
            nav="queue")

    async def job_action(self, request: Request, session: Session, form: dict[str, str]
                         ) -> Response:
        action = request.path_params["action"]
        endpoint_id = request.path_params["endpoint_id"]
        endpoint = self.supervisor.endpoints.get(endpoint_id)
        job = self._job(request)
        if action not in ("cancel", "retry"):
            return PlainTextResponse(f"no job action '{action}'; use cancel or retry", 404)
        if job is None or endpoint is None or endpoint.spec.get("type") != "QB":
            return PlainTextResponse(
                f"job '{request.path_params['job_id']}' of a running queue endpoint "
                f"'{endpoint_id}' not found; it may have been undeployed", 404)
        try:
            if action == "cancel":
                self.jobs.cancel(job)
            else:
                self.jobs.retry(job)
        except JobError as exc:
            return await self.job(request, session, error=str(exc))
        return RedirectResponse(
            f"{PREFIX}/queue/{quote(endpoint_id)}/jobs/{quote(job.id)}?done={action}", 303)

    async def purge(self, request: Request, session: Session, form: dict[str, str]
                    ) -> Response:
        endpoint_id = request.path_params["endpoint_id"]
        endpoint = self.supervisor.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.spec.get("type") != "QB":
            return PlainTextResponse(f"queue endpoint '{endpoint_id}' not found", 404)
        removed = self.jobs.purge(endpoint_id)
        return RedirectResponse(
            f"{PREFIX}/queue/{quote(endpoint_id)}?done=purged-{removed}", 303)

    # -- platform ---------------------------------------------------------------------------

    def _disk_now(self) -> dict[str, Any]:
        """Sizes of what the platform keeps (walks directories: run in a thread)."""
        home = config.flash_home()
        using: dict[str, list[str]] = {}
        for endpoint in self.supervisor.endpoints.values():
            if endpoint.python:
                using.setdefault(str(Path(endpoint.python).parent.parent), []).append(
                    endpoint.name)
        environments = []
        envs = config.envs_dir()
        for path in sorted(envs.iterdir()):
            if path.is_dir() and ".tmp-" not in path.name:
                environments.append({"name": path.name, "bytes": directory_size(path),
                                     "ready": (path / ".ready").exists(),
                                     "endpoints": sorted(using.get(str(path), []))})
        parts = sorted(((path.name, _entry_size(path)) for path in home.iterdir()),
                       key=lambda part: -part[1])
        users = users_by_volume((e.name, e.spec) for e in self.supervisor.endpoints.values())
        return {"home": str(home), "total": sum(size for _, size in parts), "parts": parts,
                "environments": environments,
                "volumes": self.supervisor.volumes.list(users),
                "volumes_root": str(self.supervisor.volumes.root), "measured": time.time()}

    async def platform(self, request: Request, session: Session) -> Response:
        if self._disk is None or time.monotonic() - self._disk[0] > DISK_CACHE_S \
                or request.query_params.get("refresh"):
            self._disk = (time.monotonic(), await asyncio.to_thread(self._disk_now))
        info = {"version": __version__, "pid": os.getpid(),
                "uptime_s": time.time() - self.started, "provider": self.provider,
                "node": self.node, "gpus": self.supervisor.provider.gpus(),
                "nodes": self.supervisor.provider.describe().get("nodes", 1),
                "url": str(request.base_url).rstrip("/")}
        return self._render(request, session, "platform.html", info=info, disk=self._disk[1],
                            nav="platform")


def _cursor(text: str | None) -> dict[str, int]:
    """The log cursor a reconnecting browser sends back; a damaged one starts afresh."""
    try:
        cursor = json.loads(text or "{}")
    except ValueError:
        return {}
    if isinstance(cursor, dict) and all(
            isinstance(name, str) and type(offset) is int and offset >= 0
            for name, offset in cursor.items()):
        return cursor
    return {}
