"""What each worker may do: a token of its own instead of the platform's.

User code runs in workers, so a worker never holds the platform token (which deploys, shuts
the platform down and runs code anywhere). Each worker gets:

- a **worker token** (in `FLASH_PLATFORM_TOKEN`, so the SDK inside the worker uses it
  unchanged): it reports that worker ready, pulls and finishes its own endpoint's jobs, and
  calls what the worker's code legitimately calls: the endpoints deployed with it (its
  peers), or, for a live worker, live endpoints (provisioning them too, as a script does);
- a **gateway secret**, sent by the platform (gateway and health checks) on every request
  to the worker in `GATEWAY_SECRET_HEADER`: a worker answers only requests that carry it, so
  nothing reaches its port except through the gateway's checks.

Tokens are random per worker and forgotten when the worker goes; the secret is random per
endpoint (its workers run the same code) and forgotten with the endpoint.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from runpod_flash import config

GATEWAY_SECRET_HEADER = config.GATEWAY_SECRET_HEADER.encode()


@dataclass(frozen=True)
class Grant:
    """One worker's rights."""

    worker_id: str
    endpoint_id: str
    live: bool  # a live worker may provision and call live endpoints, as a script does
    peers: frozenset[str]  # endpoint ids a deployed worker calls (its deployment's)
    token: str
    gateway_secret: str

    def may_call(self, endpoint_id: str, live_endpoint: bool) -> bool:
        """Whether the worker's code may call that endpoint's routes or queue."""
        return endpoint_id in self.peers or (self.live and live_endpoint)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Credentials:
    """The grants of the running workers, found by token (in constant time per lookup: the
    table is keyed by the token's digest, so timing reveals nothing about stored tokens)."""

    def __init__(self) -> None:
        self._by_digest: dict[bytes, Grant] = {}
        self._by_worker: dict[str, Grant] = {}
        self._secrets: dict[str, str] = {}  # endpoint id -> its workers' gateway secret

    def gateway_secret(self, endpoint_id: str) -> str:
        """The secret the workers of an endpoint require (one per endpoint, so a tool that
        holds the platform token can measure workers directly, e.g. behind nginx)."""
        secret = self._secrets.get(endpoint_id)
        if secret is None:
            secret = self._secrets[endpoint_id] = secrets.token_urlsafe(32)
        return secret

    def forget_endpoint(self, endpoint_id: str) -> None:
        self._secrets.pop(endpoint_id, None)

    def __len__(self) -> int:
        return len(self._by_worker)

    def issue(self, worker_id: str, endpoint_id: str, live: bool, peers: frozenset[str]
              ) -> Grant:
        self.revoke(worker_id)
        grant = Grant(worker_id, endpoint_id, live, peers, secrets.token_urlsafe(32),
                      self.gateway_secret(endpoint_id))
        self._by_digest[_digest(grant.token)] = grant
        self._by_worker[worker_id] = grant
        return grant

    def revoke(self, worker_id: str) -> None:
        grant = self._by_worker.pop(worker_id, None)
        if grant is not None:
            self._by_digest.pop(_digest(grant.token), None)

    def for_token(self, token: str) -> Grant | None:
        return self._by_digest.get(_digest(token)) if token else None

    def for_worker(self, worker_id: str) -> Grant | None:
        return self._by_worker.get(worker_id)


def bearer(authorization: str | bytes | None) -> str:
    """The token of an `Authorization: Bearer <token>` (or bare `<token>`, as Runpod's
    workers send their key) header; empty when there is none."""
    if authorization is None:
        return ""
    text = authorization.decode("latin-1") if isinstance(authorization, bytes) else authorization
    scheme, _, rest = text.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else text.strip()
