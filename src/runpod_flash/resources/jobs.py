"""What a queue endpoint reports: a finished job, and the endpoint's health.

The shapes are the Runpod serverless API's (and the original's models of them), so code that
reads ``JobOutput.output`` or ``ServerlessHealth.is_ready`` keeps working.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel


class JobOutput(BaseModel):
    """A job as the queue API reports it once it ended.

    ``workerId`` and the timings default to empty because a job cancelled or timed out
    before a worker took it has none (the original requires them and fails to build).
    """

    id: str
    status: str
    workerId: str = ""
    delayTime: int = 0
    executionTime: int = 0
    output: Any = None
    error: str | None = ""


class Status(str, Enum):
    """An endpoint's readiness, read from its worker counts."""

    READY = "READY"
    INITIALIZING = "INITIALIZING"
    THROTTLED = "THROTTLED"
    UNHEALTHY = "UNHEALTHY"
    UNKNOWN = "UNKNOWN"


class WorkersHealth(BaseModel):
    """Worker counts by state (`/health`'s ``workers``)."""

    idle: int
    initializing: int
    ready: int
    running: int
    throttled: int
    unhealthy: int

    @property
    def status(self) -> Status:
        """The most useful state present: any serving worker makes the endpoint ready."""
        if self.ready or self.idle or self.running:
            return Status.READY
        if self.initializing:
            return Status.INITIALIZING
        if self.throttled:
            return Status.THROTTLED
        if self.unhealthy:
            return Status.UNHEALTHY
        return Status.UNKNOWN


class JobsHealth(BaseModel):
    """Job counts by state (`/health`'s ``jobs``)."""

    completed: int
    failed: int
    inProgress: int
    inQueue: int
    retried: int


class ServerlessHealth(BaseModel):
    """A queue endpoint's `/health` answer."""

    workers: WorkersHealth
    jobs: JobsHealth

    @property
    def is_ready(self) -> bool:
        return self.workers.status is Status.READY
