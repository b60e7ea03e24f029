"""Cross-endpoint calls from inside a deployed worker: the endpoints deployed with it.

The platform hands each deployed worker the endpoints of its deployment (same app and
environment) in `FLASH_PEER_ENDPOINTS`: JSON `{resource name: "/ep/<id>" | "/v2/<id>"}`.
A `@remote` function of another resource of the project is then called on that deployed
endpoint (plain JSON, as any deployed call), even when its resource is a `Live*` class:
a deployed pipeline never provisions live endpoints.
"""

from __future__ import annotations

import functools
import json
import os

from runpod_flash import config


@functools.lru_cache(maxsize=1)
def _peers(raw: str) -> dict[str, str]:
    try:
        peers = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in peers.items()} if isinstance(peers, dict) else {}


def peer_url(resource_name: str) -> str | None:
    """The URL of the resource's endpoint in this worker's deployment; None elsewhere."""
    raw = os.environ.get(config.ENV_PEER_ENDPOINTS)
    platform_url = os.environ.get(config.ENV_PLATFORM_URL)
    if not raw or not platform_url:
        return None
    path = _peers(raw).get(resource_name)
    return platform_url.rstrip("/") + path if path else None
