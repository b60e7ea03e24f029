"""A worker answers only the platform: requests must carry its gateway secret.

Workers listen on loopback ports any local user could reach; without this, an endpoint's
routes (and a live worker's `/execute`) would bypass the gateway's API key and token checks.
The platform sends the secret on everything it forwards and on its health checks.
"""

from __future__ import annotations

import hmac
from typing import Any

from runpod_flash import config
from runpod_flash.asgi import send_json

_HEADER = config.GATEWAY_SECRET_HEADER.encode()


class GatewayOnly:
    """ASGI middleware: 403 for any HTTP request without the worker's gateway secret."""

    def __init__(self, app: Any, secret: str) -> None:
        self.app = app
        self._secret = secret.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self._admitted(scope["headers"]):
            await send_json(send, 403, {"error": "this worker answers only its platform's "
                                                 "gateway; call the endpoint's URL instead"})
            return
        await self.app(scope, receive, send)

    def _admitted(self, headers: list[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name == _HEADER:
                return hmac.compare_digest(value, self._secret)
        return False
