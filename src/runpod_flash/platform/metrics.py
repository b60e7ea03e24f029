"""Prometheus metrics of the platform, served at `/metrics`.

Counters and histograms are updated on the request path (a few microseconds); gauges that
describe state (workers by state, queue depth) are read from the supervisor at scrape time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_PARAM = re.compile(r"\\\{[^}]*\\\}")


@lru_cache(maxsize=4096)
def _route_pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + _PARAM.sub("[^/]+", re.escape(template)) + "/?$")


def route_label(routes: dict[str, Any], method: str, path: str) -> str:
    """The route template a request matched ("GET /users/{user_id}"), or "other": paths
    themselves would make a label per user id."""
    for route in routes:
        route_method, _, template = route.partition(" ")
        if route_method == method and _route_pattern(template).match(path):
            return route
    return f"{method} {path}" if path in ("/ping", "/execute") else "other"


class Metrics:
    def __init__(self, supervisor: Any, queue_depth: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flash_requests_total", "Requests through the gateway.",
            ["endpoint", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "flash_request_duration_seconds", "Gateway request latency, worker included.",
            ["endpoint", "route"], buckets=BUCKETS, registry=self.registry,
        )
        self.jobs = Counter(
            "flash_jobs_total", "Queue jobs finished, by final state.",
            ["endpoint", "status"], registry=self.registry,
        )
        self.registry.register(_StateCollector(supervisor, queue_depth))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, endpoint: str, route: str, status: int, seconds: float) -> None:
        # labels() costs more than the proxy hop's own bookkeeping: children are looked up
        # once per (endpoint, route, status) and kept (prometheus keeps them anyway).
        key = (endpoint, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(endpoint, route, str(status)),
                self.latency.labels(endpoint, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Workers by state, queue depth and cold starts, read when Prometheus scrapes."""

    def __init__(self, supervisor: Any, queue_depth: Any) -> None:
        self._supervisor = supervisor
        self._queue_depth = queue_depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        workers = GaugeMetricFamily("flash_workers", "Workers by state.",
                                    labels=["endpoint", "state"])
        depth = GaugeMetricFamily("flash_queue_depth", "Jobs waiting in the queue.",
                                  labels=["endpoint"])
        cold = GaugeMetricFamily("flash_cold_starts", "Workers started since the platform "
                                 "started.", labels=["endpoint"])
        for endpoint in self._supervisor.endpoints.values():
            states: dict[str, int] = {}
            for worker in endpoint.workers.values():
                states[worker.state] = states.get(worker.state, 0) + 1
            for state in ("starting", "ready", "draining"):
                workers.add_metric([endpoint.name, state], states.get(state, 0))
            depth.add_metric([endpoint.name], self._queue_depth(endpoint.id))
            cold.add_metric([endpoint.name], endpoint.stats["cold_starts"])
        yield from (workers, depth, cold)
