"""`flash status` for people: one block per endpoint, readable at 80 columns."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from runpod_flash.cli.status_view import render

URL = "http://127.0.0.1:7770/ep/a-rather-long-endpoint-name--staging"


def endpoint(**overrides: Any) -> dict[str, Any]:
    base = {
        "name": "a-rather-long-endpoint-name", "kind": "deployed", "type": "LB",
        "status": "ready", "error": None, "last_start_failure": None, "warning": None,
        "app": "shop", "environment": "staging", "url": URL, "routes": ["GET /users"],
        "env": {"TOKEN": "***"}, "workers": [{"state": "ready"}, {"state": "starting"}],
        "workersMin": 0, "workersMax": 3, "deployed_at": 0.0, "version": "abc123",
        "stats": {"requests": 7, "errors": 1, "cold_starts": 2},
    }
    return {**base, **overrides}


def shown(endpoints: list[dict[str, Any]], width: int = 80) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(render("http://127.0.0.1:7770", endpoints))
    return console.export_text()


def test_each_endpoint_is_a_block_and_urls_are_never_squeezed() -> None:
    text = shown([endpoint()])
    assert "a-rather-long-endpoint-name  LB  ready  shop/staging" in text
    assert URL in text  # whole, on one line
    assert "1 ready, 1 starting (min 0, max 3)" in text
    assert "7 requests, 1 errors, 2 cold starts" in text and "TOKEN=***" in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


def test_deployed_and_live_are_listed_apart_and_queues_count_jobs() -> None:
    jobs = {"completed": 5, "failed": 1, "inQueue": 2, "inProgress": 1, "retried": 0}
    text = shown([
        endpoint(name="live-x", kind="live", type="QB", environment=None,
                 stats={"requests": 0, "errors": 0, "cold_starts": 1, "jobs": jobs}),
        endpoint(),
    ])
    assert text.index("DEPLOYED") < text.index("a-rather-long") < text.index("LIVE") \
        < text.index("live-x")
    assert "5 jobs done, 1 failed, 2 queued, 1 running; 1 cold start" in text
    assert "platform http://127.0.0.1:7770: 1 deployed, 1 live" in text


def test_workers_on_a_cluster_show_their_nodes_and_local_ones_do_not() -> None:
    on_ray = endpoint(workers=[{"state": "ready", "node": "1a2b3c4d" + "0" * 48},
                               {"state": "ready", "node": "1a2b3c4d" + "0" * 48},
                               {"state": "starting", "node": "9f8e7d6c" + "1" * 48}])
    assert "  nodes     2 on 1a2b3c4d, 1 on 9f8e7d6c" in shown([on_ray])
    assert "nodes" not in shown([endpoint()])
