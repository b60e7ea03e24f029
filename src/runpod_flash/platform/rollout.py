"""Deploying a version of an endpoint without downtime: a canary worker of the new version
must serve before it takes traffic; then the old workers drain. If it cannot start, the
running version keeps serving."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from runpod_flash.control import DEFAULT_ENVIRONMENT, deployed_endpoint_id
from runpod_flash.platform.endpoints import Endpoint
from runpod_flash.platform.fleet import Fleet

Prepare = Callable[[dict[str, Any], Callable[[str], None]], Awaitable[str]]


class DeployFailed(Exception):
    """A new version could not start; the running version (if any) keeps serving."""


def deployed_id(spec: dict[str, Any]) -> str:
    """A deployed spec's endpoint id, from its name and environment (never the platform's
    own environment variables)."""
    return deployed_endpoint_id(str(spec["name"]),
                                str(spec.get("environment") or DEFAULT_ENVIRONMENT))


class Rollouts:
    def __init__(self, fleet: Fleet, prepare: Prepare,
                 warning: Callable[[dict[str, Any]], str | None]) -> None:
        self._fleet = fleet
        self._prepare = prepare  # (spec, progress) -> the interpreter; raises DeployFailed
        self._warning = warning

    async def deploy(
        self, spec: dict[str, Any], progress: Callable[[str], None]
    ) -> tuple[Endpoint, str]:
        """Create or update a deployed endpoint; returns it and "created|updated|unchanged"."""
        fleet = self._fleet
        endpoint_id = deployed_id(spec)
        async with fleet.lock(endpoint_id):
            current = fleet.endpoints.get(endpoint_id)
            candidate = Endpoint(endpoint_id, str(spec["name"]), "deployed", spec)
            if current is not None and current.version == candidate.version \
                    and current.status == "ready":
                return current, "unchanged"
            _check_owner(current, spec, endpoint_id)
            progress(f"{candidate.name}: preparing environment")
            python = await self._prepare(spec, progress)
            endpoint = current or candidate
            if current is None:
                endpoint.status, endpoint.python = "building", python
                endpoint.warning = self._warning(spec)
                fleet.endpoints[endpoint_id] = endpoint
            progress(f"{candidate.name}: starting a worker of version {candidate.version}")
            canary = fleet.start_worker(endpoint, spec=spec, python=python,
                                        version=candidate.version)
            if canary is None or not await fleet.wait_ready(endpoint, canary):
                failure = endpoint.last_start_failure or (
                    "worker did not start" if canary is None or canary.process is not None
                    else f"the {fleet.provider.name} provider found no room for it in time")
                if current is None:
                    fleet.endpoints.pop(endpoint.id, None)
                    await fleet.drain_all(endpoint)
                else:  # the failure was the new version's; the running one is fine
                    endpoint.last_start_failure = None
                    endpoint.start_failures, endpoint.retry_start_at = 0, 0.0
                raise DeployFailed(f"{candidate.name}: the new version did not start: {failure}")
            old_workers = [w for w in endpoint.workers.values() if w.version != candidate.version]
            endpoint.use_spec(spec)
            endpoint.python = python
            endpoint.status, endpoint.error = "ready", None
            endpoint.deployed_at = time.time()
            endpoint.warning = self._warning(spec)
            fleet.store.save_endpoint(endpoint_id, endpoint.name, "deployed", spec)
            endpoint.notify()
            for worker in old_workers:
                fleet.spawn(fleet.drain(worker))
            fleet.scale(endpoint)
            return endpoint, "created" if current is None else "updated"


def _check_owner(current: Endpoint | None, spec: dict[str, Any], endpoint_id: str) -> None:
    """A name is one endpoint: a live one, or another app's, is not replaced by a deploy."""
    if current is None:
        return
    if current.kind != "deployed":
        raise DeployFailed(f"'{endpoint_id}' is a live endpoint; choose another name")
    owner = current.spec.get("app")
    if owner and spec.get("app") and owner != spec["app"]:
        raise DeployFailed(
            f"endpoint '{endpoint_id}' belongs to app '{owner}'; give resource "
            f"'{spec['name']}' another name, or deploy with --app {owner}"
        )
