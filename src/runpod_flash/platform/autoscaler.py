"""How many workers an endpoint should have right now (a pure policy, easy to test).

REQUEST_COUNT: one worker per `scalerValue` requests or jobs in flight or waiting.
QUEUE_DELAY (queue endpoints): one more worker whenever the oldest waiting job has waited
longer than `scalerValue` seconds. Always within workersMin..workersMax, and at least one
worker while there is work, so an endpoint scales from zero on demand and back to zero idle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Load:
    """What an endpoint is asked to do at this moment."""

    busy: int = 0  # requests being served or jobs running
    waiting: int = 0  # requests waiting for a worker, or jobs in the queue
    oldest_wait_s: float = 0.0  # how long the oldest waiting job has waited


def desired_workers(spec: dict[str, Any], current: int, load: Load) -> int:
    per_worker = max(1, int(spec.get("scalerValue", 4)))
    low, high = int(spec.get("workersMin", 0)), max(1, int(spec.get("workersMax", 1)))
    if spec.get("type") == "QB" and spec.get("scalerType") == "QUEUE_DELAY":
        wanted = current + (1 if load.waiting and load.oldest_wait_s > per_worker else 0)
    else:
        wanted = math.ceil((load.busy + load.waiting) / per_worker)
    if load.busy or load.waiting:
        wanted = max(wanted, 1)
    return min(max(wanted, low), high)
