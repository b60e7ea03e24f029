"""/metrics labels: one series per endpoint id, the endpoint's name beside it."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from runpod_flash.platform.endpoints import Endpoint
from runpod_flash.platform.metrics import Metrics


def _samples(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_one_name_in_two_environments_makes_two_series() -> None:
    production = Endpoint("api", "api", "deployed", {"type": "LB"})
    staging = Endpoint("api--staging", "api", "deployed", {"type": "LB"})
    supervisor = SimpleNamespace(endpoints={e.id: e for e in (production, staging)})
    metrics = Metrics(supervisor, lambda endpoint_id: 0)
    for _ in range(3):
        metrics.observe_request("api", "GET /hello", 200, 0.002)
    metrics.observe_request("api--staging", "GET /hello", 200, 0.2)

    samples = _samples(metrics)
    requests = {labels["endpoint"]: (labels["name"], value)
                for labels, value in samples["flash_requests_total"]}
    assert requests == {"api": ("api", 3), "api--staging": ("api", 1)}
    slow = {labels["endpoint"]: value for labels, value in
            samples["flash_request_duration_seconds_bucket"] if labels["le"] == "0.1"}
    assert slow == {"api": 3, "api--staging": 0}  # neither is given the other's latency
    ready = {labels["endpoint"]: labels["name"] for labels, _ in samples["flash_workers"]}
    assert ready == {"api": "api", "api--staging": "api"}


def test_an_endpoint_keeps_its_name_label_after_it_is_gone() -> None:
    live = Endpoint("live-api-1a2b3c4d", "api", "live", {"type": "LB"})
    supervisor = SimpleNamespace(endpoints={live.id: live})
    metrics = Metrics(supervisor, lambda endpoint_id: 0)
    metrics.observe_request(live.id, "POST /execute", 200, 0.01)
    metrics.render()
    del supervisor.endpoints[live.id]
    labels, value = _samples(metrics)["flash_requests_total"][0]
    assert (labels["endpoint"], labels["name"], value) == ("live-api-1a2b3c4d", "api", 1)
