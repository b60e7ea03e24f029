"""Prometheus metrics of the platform, served at `/metrics`.

Series are labelled by endpoint id (`endpoint`: one endpoint's name is shared by its
environments, `name` and `name--staging`), with the endpoint's `name` beside it. Request
counts and latencies are plain numbers updated on the request path (well under a
microsecond) and turned into families at scrape time, when the names are looked up; gauges
that describe state (workers by state, queue depth) are read from the supervisor at scrape
time.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

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
        self.jobs = Counter(
            "flash_jobs_total", "Queue jobs finished, by final state.",
            ["endpoint", "status"], registry=self.registry,
        )
        self._requests = _RequestStats(lambda endpoint_id: _name_of(supervisor, endpoint_id))
        self.registry.register(self._requests)
        self.registry.register(_StateCollector(supervisor, queue_depth))
        # observe_request(endpoint_id, route, status, seconds): one gateway request (bound
        # here, not wrapped: it runs once per proxied request)
        self.observe_request = self._requests.observe

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _name_of(supervisor: Any, endpoint_id: str) -> str | None:
    endpoint = supervisor.endpoints.get(endpoint_id)
    return None if endpoint is None else endpoint.name


class _RequestStats:
    """Gateway request counts and latencies, kept as plain numbers on the request path
    (prometheus_client's labelled metrics take a lock per update, which cost more than the
    proxy hop's own bookkeeping) and turned into metric families when Prometheus scrapes.

    One entry per (endpoint id, route template, status): bounded by the routes deployed.
    Names are looked up when scraped, so the request path pays nothing for them.
    """

    def __init__(self, name_of: Callable[[str], str | None]) -> None:
        self._name_of = name_of
        self._names: dict[str, str] = {}  # endpoint id -> name, kept once the endpoint is gone
        self._counts: dict[tuple[str, str, int], list[int]] = {}
        # (endpoint, route) -> [per-bucket counts..., +Inf count, sum of seconds]
        self._latency: dict[tuple[str, str], list[float]] = {}

    def _name(self, endpoint_id: str) -> str:
        name = self._names.get(endpoint_id)
        if name is None:
            name = self._name_of(endpoint_id)
            if name is None:
                return ""  # gone before its first scrape
            self._names[endpoint_id] = name
        return name

    def observe(self, endpoint: str, route: str, status: int, seconds: float) -> None:
        counter = self._counts.get((endpoint, route, status))
        if counter is None:
            counter = self._counts[(endpoint, route, status)] = [0]
        counter[0] += 1
        latency = self._latency.get((endpoint, route))
        if latency is None:
            latency = self._latency[(endpoint, route)] = [0.0] * (len(BUCKETS) + 2)
        latency[bisect_left(BUCKETS, seconds)] += 1
        latency[-1] += seconds

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily("flash_requests", "Requests through the gateway.",
                                       labels=["endpoint", "name", "route", "status"])
        for (endpoint, route, status), (count,) in list(self._counts.items()):
            requests.add_metric([endpoint, self._name(endpoint), route, str(status)], count)
        latency = HistogramMetricFamily(
            "flash_request_duration_seconds", "Gateway request latency, worker included.",
            labels=["endpoint", "name", "route"])
        for (endpoint, route), values in list(self._latency.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip((*BUCKETS, float("inf")), values[:-1], strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            latency.add_metric([endpoint, self._name(endpoint), route], buckets, values[-1])
        yield from (requests, latency)


class _StateCollector:
    """Workers by state, queue depth and cold starts, read when Prometheus scrapes."""

    def __init__(self, supervisor: Any, queue_depth: Any) -> None:
        self._supervisor = supervisor
        self._queue_depth = queue_depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        workers = GaugeMetricFamily("flash_workers", "Workers by state.",
                                    labels=["endpoint", "name", "state"])
        depth = GaugeMetricFamily("flash_queue_depth", "Jobs waiting in the queue.",
                                  labels=["endpoint", "name"])
        cold = GaugeMetricFamily("flash_cold_starts", "Workers started since the platform "
                                 "started.", labels=["endpoint", "name"])
        for endpoint in self._supervisor.endpoints.values():
            states: dict[str, int] = {}
            for worker in endpoint.workers.values():
                states[worker.state] = states.get(worker.state, 0) + 1
            labels = [endpoint.id, endpoint.name]
            for state in ("starting", "ready", "draining"):
                workers.add_metric([*labels, state], states.get(state, 0))
            depth.add_metric(labels, self._queue_depth(endpoint.id))
            cold.add_metric(labels, endpoint.stats["cold_starts"])
        yield from (workers, depth, cold)
