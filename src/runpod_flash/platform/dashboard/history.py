"""The last hour of each endpoint, for the dashboard's charts: kept in memory by the platform
itself, so no time-series service is needed.

Every 10 s (FLASH_DASHBOARD_SAMPLE_S) the sampler reads what the platform already counts
(request and error counters of the gateway, jobs finished by the queue, the latency
histograms of `/metrics`, workers and queue depth) and keeps the difference since the
previous sample: 360 points per endpoint, an hour at 10 s. It also keeps the counters of the
last minute, so the endpoint list shows a minute's rates and percentiles rather than one
interval's. Percentiles are estimated from the histogram buckets, as Prometheus'
`histogram_quantile` does.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from runpod_flash.platform.jobs import JobQueue
from runpod_flash.platform.metrics import Metrics
from runpod_flash.platform.periodic import Periodic
from runpod_flash.platform.supervisor import Supervisor

ENV_SAMPLE_S = "FLASH_DASHBOARD_SAMPLE_S"  # shorter in tests, to see points sooner
DEFAULT_SAMPLE_S = 10.0
POINTS = 360
RECENT_S = 60.0  # the endpoint list's window
LATENCY_FAMILY = "flash_request_duration_seconds"


@dataclass(frozen=True)
class Point:
    """One endpoint over an interval: one sampling interval (charts) or the last minute."""

    at: float  # wall clock at the end of the interval
    seconds: float  # the interval's length
    requests: int  # gateway requests (LB) or jobs finished (QB) in the interval
    errors: int  # 5xx answers (LB) or failed and timed-out jobs (QB)
    workers: int  # ready workers at the end
    queue: int  # jobs (QB) or requests (LB) waiting for a worker
    p50_ms: float | None  # None: no request in the interval, or no histogram (QB)
    p95_ms: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def json(self) -> dict[str, Any]:
        """The chart's view (written out: `dataclasses.asdict` is ten times slower)."""
        return {"at": self.at, "rps": round(self.rps, 3), "errors": self.errors,
                "workers": self.workers, "queue": self.queue, "p50_ms": self.p50_ms,
                "p95_ms": self.p95_ms}


def sample_interval_s() -> float:
    """The sampling interval in seconds (FLASH_DASHBOARD_SAMPLE_S, 10 when unset)."""
    raw = os.environ.get(ENV_SAMPLE_S, "")
    try:
        value = float(raw) if raw else DEFAULT_SAMPLE_S
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{ENV_SAMPLE_S}={raw!r} is not a positive number of seconds; "
                         f"set it to e.g. {DEFAULT_SAMPLE_S:g}, or unset it")
    return value


class History:
    """Per endpoint: a ring buffer of interval points, and the last minute as one point."""

    def __init__(self, points: int = POINTS) -> None:
        self._points = points
        self._series: dict[str, deque[Point]] = {}
        self._recent: dict[str, Point] = {}

    def add(self, endpoint_id: str, point: Point, recent: Point) -> None:
        series = self._series.get(endpoint_id)
        if series is None:
            series = self._series[endpoint_id] = deque(maxlen=self._points)
        series.append(point)
        self._recent[endpoint_id] = recent

    def points(self, endpoint_id: str) -> list[Point]:
        return list(self._series.get(endpoint_id, ()))

    def recent(self, endpoint_id: str) -> Point | None:
        """The last minute (or less, right after a start), None before a second sample."""
        return self._recent.get(endpoint_id)

    def keep_only(self, endpoint_ids: Iterable[str]) -> None:
        """Forget endpoints that are gone."""
        keep = set(endpoint_ids)
        for endpoint_id in [e for e in self._series if e not in keep]:
            del self._series[endpoint_id]
            self._recent.pop(endpoint_id, None)


def quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """The q-quantile of a histogram (bucket upper bounds, the last +Inf, and cumulative
    counts), interpolated within its bucket; None when it holds nothing."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def latency_histograms(metrics: Metrics) -> dict[str, tuple[list[float], list[float]]]:
    """{endpoint id: (bucket bounds, cumulative counts)} summed over the endpoint's routes,
    read through the metrics registry (as a Prometheus scrape would)."""
    buckets: dict[str, dict[float, float]] = {}
    for family in metrics.registry.collect():
        if family.name != LATENCY_FAMILY:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                counts = buckets.setdefault(sample.labels["endpoint"], {})
                bound = float(sample.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + sample.value
    return {name: (sorted(counts), [counts[b] for b in sorted(counts)])
            for name, counts in buckets.items()}


@dataclass(frozen=True)
class Snapshot:
    """An endpoint's counters at one moment; the difference of two makes a Point."""

    at: float
    requests: int
    errors: int
    latency: tuple[list[float], list[float]] | None  # (bounds, cumulative counts)

    def since(self, before: Snapshot, workers: int, queue: int) -> Point:
        """What happened between `before` and this; counters that went back (an endpoint
        made anew under the same id) count from zero."""
        restarted = self.requests < before.requests or self.errors < before.errors
        requests = self.requests - (0 if restarted else before.requests)
        errors = self.errors - (0 if restarted else before.errors)
        p50 = p95 = None
        if self.latency is not None:
            bounds, now = self.latency
            then = before.latency[1] if before.latency is not None and not restarted \
                and len(before.latency[1]) == len(now) else [0.0] * len(now)
            window = [max(0.0, a - b) for a, b in zip(now, then, strict=True)]
            p50, p95 = (_ms(quantile(q, bounds, window)) for q in (0.5, 0.95))
        return Point(self.at, self.at - before.at, requests, errors, workers, queue, p50, p95)


class Sampler:
    """Takes a point per endpoint every interval; started and stopped with the platform."""

    def __init__(self, supervisor: Supervisor, jobs: JobQueue, metrics: Metrics,
                 history: History, interval_s: float | None = None) -> None:
        self.supervisor = supervisor
        self.jobs = jobs
        self.metrics = metrics
        self.history = history
        self.interval_s = sample_interval_s() if interval_s is None else interval_s
        self._kept = math.ceil(RECENT_S / self.interval_s) + 1  # snapshots a minute spans
        self._snapshots: dict[str, deque[Snapshot]] = {}
        self._periodic = Periodic(self.sample, self.interval_s, "dashboard sample")

    def start(self) -> None:
        self.sample()  # the baseline: the first interval counts from now
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def sample(self, now: float | None = None) -> None:
        """Record the interval since the previous call (an endpoint's first call only sets
        its baseline)."""
        now = time.time() if now is None else now
        histograms = latency_histograms(self.metrics)
        for endpoint in list(self.supervisor.endpoints.values()):
            if endpoint.spec.get("type") == "QB":
                health = self.jobs.health(endpoint.id)
                requests, errors = health["completed"] + health["failed"], health["failed"]
                queue = health["inQueue"]
            else:
                requests, errors = endpoint.stats["requests"], endpoint.stats["errors"]
                queue = endpoint.waiting
            snapshot = Snapshot(now, requests, errors, histograms.get(endpoint.id))
            kept = self._snapshots.get(endpoint.id)
            if kept is None:
                kept = self._snapshots[endpoint.id] = deque(maxlen=self._kept)
            if kept:
                workers = sum(1 for w in endpoint.workers.values() if w.state == "ready")
                self.history.add(endpoint.id, snapshot.since(kept[-1], workers, queue),
                                 snapshot.since(kept[0], workers, queue))
            kept.append(snapshot)
        for gone in [e for e in self._snapshots if e not in self.supervisor.endpoints]:
            del self._snapshots[gone]
        self.history.keep_only(self.supervisor.endpoints)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
